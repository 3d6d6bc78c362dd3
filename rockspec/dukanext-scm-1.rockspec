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
-- The transport waits on epoll.
supported_platforms = { "linux" }
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
}
build = {
  type = "builtin",
  modules = {
    dukanext = {
      sources = {
        "src/buf.c", "src/os_posix.c", "src/os_linux.c", "src/ids.c", "src/json.c", "src/body.c", "src/session.c",
        "src/queue.c", "src/policy.c", "src/transport.c", "src/client.c",
        "src/file_store.c", "src/spool.c", "src/dukanext.c",
      },
      defines = { "_GNU_SOURCE" },
      incdirs = { "src", "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
      libraries = { "curl" },
    },
    -- The OpenResty helper, beside the C module.
    ["dukanext.ngx"] = "lua/dukanext/ngx.lua",
  },
}
