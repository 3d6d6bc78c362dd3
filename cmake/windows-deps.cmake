# The Windows build's dependencies, from the prefix tests/windows/deps.sh fills:
#   cmake -S . -B build-win -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake \
#     -DDUKANEXT_WINDOWS_DEPS=PREFIX [-DDUKANEXT_LUA=5.4|luajit]
# Sets DUKANEXT_CURL (a target) and DN_LUA_<key>_INCLUDE_DIRS, _LIBRARIES and _EXE
# for the chosen Lua, as dukanext_find_lua does on the other systems.
set(DUKANEXT_WINDOWS_DEPS "" CACHE PATH "Prefix with libcurl and Lua built for Windows (tests/windows/deps.sh)")
if(NOT DUKANEXT_WINDOWS_DEPS)
  message(FATAL_ERROR "A Windows build needs -DDUKANEXT_WINDOWS_DEPS=PREFIX (tests/windows/deps.sh PREFIX fills it)")
endif()
if(DUKANEXT_ALL_LUAS OR DUKANEXT_SANITIZE OR DUKANEXT_PORTABLE)
  message(FATAL_ERROR "DUKANEXT_ALL_LUAS, DUKANEXT_SANITIZE and DUKANEXT_PORTABLE are for POSIX builds")
endif()
get_filename_component(deps ${DUKANEXT_WINDOWS_DEPS} ABSOLUTE)

# A file the prefix must hold (the prefix is outside the MinGW sysroot that
# find_library searches in a cross build).
function(dukanext_windows_file var path)
  if(NOT EXISTS ${deps}/${path})
    message(FATAL_ERROR "${deps}/${path} is missing: run tests/windows/deps.sh ${deps}")
  endif()
  set(${var} ${deps}/${path} PARENT_SCOPE)
endfunction()

dukanext_windows_file(curl_import_lib lib/libcurl-4.dll.a)
add_library(dukanext_curl INTERFACE)
target_include_directories(dukanext_curl INTERFACE ${deps}/include)
target_link_libraries(dukanext_curl INTERFACE ${curl_import_lib})
set(DUKANEXT_CURL dukanext_curl)

if(DUKANEXT_LUA STREQUAL "5.4")
  set(DN_LUA_54_INCLUDE_DIRS ${deps}/include/lua5.4)
  dukanext_windows_file(DN_LUA_54_LIBRARIES lib/liblua54.dll.a)
  dukanext_windows_file(DN_LUA_54_EXE bin/lua.exe)
elseif(DUKANEXT_LUA STREQUAL "luajit")
  set(DN_LUA_luajit_INCLUDE_DIRS ${deps}/include/luajit-2.1)
  dukanext_windows_file(DN_LUA_luajit_LIBRARIES lib/libluajit-5.1.dll.a)
  dukanext_windows_file(DN_LUA_luajit_EXE bin/luajit.exe)
else()
  message(FATAL_ERROR "DUKANEXT_LUA=${DUKANEXT_LUA}: the Windows build is for 5.4 or luajit")
endif()

# GCC's runtime goes inside dukanext.dll, so that a game ships one DLL and libcurl's.
if(MINGW)
  add_link_options(-static-libgcc)
endif()
