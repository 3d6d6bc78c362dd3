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
-- systems (macOS, the BSDs); Windows. LuaRocks merges a platform's lists into the
-- default ones index by index (unix first, then linux), so the default list is the
-- core alone and each platform's list repeats it whole before its OS files.
build = {
  type = "builtin",
  modules = {
    dukanext = {
      sources = {
        "src/buf.c", "src/ids.c", "src/json.c", "src/body.c", "src/session.c", "src/queue.c",
        "src/policy.c", "src/transport.c", "src/client.c", "src/file_store.c", "src/spool.c",
        "src/dukanext.c",
      },
      incdirs = { "src", "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
      libraries = { "curl" },
    },
    -- The OpenResty helper, beside the C module.
    ["dukanext.ngx"] = "lua/dukanext/ngx.lua",
  },
  platforms = {
    unix = {
      modules = {
        dukanext = {
          sources = {
            "src/buf.c", "src/ids.c", "src/json.c", "src/body.c", "src/session.c", "src/queue.c",
            "src/policy.c", "src/transport.c", "src/client.c", "src/file_store.c", "src/spool.c",
            "src/dukanext.c",
            "src/os_posix.c", "src/os_portable.c",
          },
        },
      },
    },
    linux = {
      modules = {
        dukanext = {
          sources = {
            "src/buf.c", "src/ids.c", "src/json.c", "src/body.c", "src/session.c", "src/queue.c",
            "src/policy.c", "src/transport.c", "src/client.c", "src/file_store.c", "src/spool.c",
            "src/dukanext.c",
            "src/os_posix.c", "src/os_linux.c",
          },
          defines = { "_GNU_SOURCE" },
        },
      },
    },
    windows = {
      modules = {
        dukanext = {
          sources = {
            "src/buf.c", "src/ids.c", "src/json.c", "src/body.c", "src/session.c", "src/queue.c",
            "src/policy.c", "src/transport.c", "src/client.c", "src/file_store.c", "src/spool.c",
            "src/dukanext.c",
            "src/os_windows.c",
          },
          libraries = { "libcurl", "ws2_32", "bcrypt" },
        },
      },
    },
  },
}
