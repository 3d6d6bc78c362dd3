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
-- One compiler call from the sources straight into the rock's folder: nothing is left
-- in the checkout. (The builtin type writes src/*.o and ./dukanext.so there, and Lua's
-- default ./?.so then loads that file from the repository's root, in whatever Lua
-- runs there.)
build = {
  type = "command",
  install_command = 'mkdir -p "$(LIBDIR)" && $(CC) $(CFLAGS) $(LIBFLAG) -D_GNU_SOURCE'
    .. ' -Isrc -I"$(LUA_INCDIR)" -I"$(CURL_INCDIR)" -o "$(LIBDIR)/dukanext.so"'
    .. " src/buf.c src/os_posix.c src/os_linux.c src/ids.c src/json.c src/body.c src/session.c"
    .. " src/queue.c src/policy.c src/config.c src/transport.c src/concurrency.c src/client.c"
    .. " src/file_store.c src/spool_record.c src/spool_files.c src/spool_adopt.c src/spool.c"
    .. " src/url.c src/suggest.c src/dukanext.c src/binding_emit.c src/binding_storage.c"
    .. ' src/binding_options.c -L"$(CURL_LIBDIR)" -lcurl -lm',
  install = {
    -- The OpenResty helper, beside the C module.
    lua = { ["dukanext.ngx"] = "lua/dukanext/ngx.lua" },
  },
}
