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
external_dependencies = {
  CURL = { header = "curl/curl.h", library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    dukanext = {
      sources = {
        "src/buf.c", "src/process.c", "src/ids.c", "src/json.c", "src/session.c",
        "src/queue.c", "src/policy.c", "src/transport.c", "src/client.c",
        "src/file_store.c", "src/spool.c", "src/dukanext.c",
      },
      defines = { "_GNU_SOURCE" },
      incdirs = { "src", "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
      libraries = { "curl" },
    },
  },
}
