rockspec_format = "3.0"
package = "dukanext"
version = "scm-1"
source = {
  url = "git+https://github.com/dukanext/dukanext-lua.git",
}
description = {
  summary = "Dukanext analytics client for Lua: never blocks the host, loses no accepted event",
  detailed = [[
dukanext sends storefront, game and app analytics events to the Dukanext endpoint
(PUT /access/api/v1/analytics) through one libcurl multi handle that the host pumps:
from an OpenResty timer or once per game frame.]],
  license = "MIT",
  labels = { "analytics", "openresty", "curl" },
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
-- libcurl 7.85 or later, with its development files. Only the library is checked:
-- Debian and Ubuntu keep curl/curl.h in /usr/include/<multiarch>/, where the compiler
-- finds it but LuaRocks (3.8) does not look for headers, so a header check would fail
-- there. CURL_DIR, CURL_INCDIR and CURL_LIBDIR still point the build elsewhere.
external_dependencies = {
  CURL = { library = "curl" },
  platforms = {
    -- Windows has no multiarch folders: the header is checked too. The import library
    -- of a MinGW or MSVC build of libcurl is libcurl.dll.a / libcurl.lib.
    windows = { CURL = { header = "curl/curl.h", library = "libcurl" } },
  },
}
-- The core, then the OS seam (src/os.h) of each OS family: Linux; the other POSIX
-- systems (macOS, the BSDs); Windows.
local core_sources = {
  "src/buf.c", "src/ids.c", "src/json.c", "src/body.c", "src/session.c", "src/queue.c",
  "src/policy.c", "src/config.c", "src/transport.c", "src/concurrency.c", "src/client.c",
  "src/file_store.c", "src/spool_record.c", "src/spool_files.c", "src/spool_adopt.c",
  "src/spool.c", "src/url.c", "src/suggest.c", "src/dukanext.c", "src/binding_emit.c",
  "src/binding_storage.c", "src/binding_options.c",
}

-- On POSIX systems, one compiler call from the sources straight into the rock's folder:
-- nothing is left in the checkout. (The builtin type writes src/*.o and ./dukanext.so
-- there, and Lua's default ./?.so then loads that file from the repository's root, in
-- whatever Lua runs there.)
-- (A rockspec runs without Lua's libraries: plain loops instead of table.concat.)
local core_list = ""
for i = 1, #core_sources do core_list = core_list .. core_sources[i] .. " " end

local function compile(os_sources, defines)
  return 'mkdir -p "$(LIBDIR)" && $(CC) $(CFLAGS) $(LIBFLAG) ' .. defines
    .. ' -Isrc -I"$(LUA_INCDIR)" -I"$(CURL_INCDIR)" -o "$(LIBDIR)/dukanext.$(LIB_EXTENSION)" '
    .. core_list .. os_sources .. ' -L"$(CURL_LIBDIR)" -lcurl -lm'
end

local windows_sources = {}
for i = 1, #core_sources do windows_sources[i] = core_sources[i] end
windows_sources[#windows_sources + 1] = "src/os_windows.c"

build = {
  type = "command",
  install_command = compile("src/os_posix.c src/os_portable.c", ""),
  install = {
    -- The OpenResty helper, beside the C module.
    lua = { ["dukanext.ngx"] = "lua/dukanext/ngx.lua" },
  },
  platforms = {
    linux = {
      install_command = compile("src/os_posix.c src/os_linux.c", "-D_GNU_SOURCE"),
    },
    -- Windows: LuaRocks' own build, which knows MinGW's gcc and MSVC's cl alike.
    windows = {
      type = "builtin",
      modules = {
        dukanext = {
          sources = windows_sources,
          incdirs = { "src", "$(CURL_INCDIR)" },
          libdirs = { "$(CURL_LIBDIR)" },
          libraries = { "libcurl", "ws2_32", "bcrypt" },
        },
      },
    },
  },
}
