# Cross build for 64-bit Windows with Debian's MinGW-w64 (gcc-mingw-w64-x86-64).
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(DN_MINGW_TRIPLET x86_64-w64-mingw32)

set(CMAKE_C_COMPILER ${DN_MINGW_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${DN_MINGW_TRIPLET}-g++)
set(CMAKE_RC_COMPILER ${DN_MINGW_TRIPLET}-windres)

# Libraries and headers come from the MinGW sysroot (and the Windows dependencies'
# prefix), never from the Linux host; programs such as pkg-config and lua stay the host's.
set(CMAKE_FIND_ROOT_PATH /usr/${DN_MINGW_TRIPLET})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
