-- How long nginx -s quit takes when the collector is down: README's OpenResty
-- snippet, 2 workers, flush_timeout = 3, a few page views whose events cannot be
-- delivered (nothing listens at the endpoint, every attempt is retried).
--
--   lua5.4 bench/openresty_exit.lua [rounds]
--
-- Needs the LuaJIT build (build/lua-luajit/dukanext.so, or DUKANEXT_LUAJIT_CPATH),
-- nginx with its Lua module, curl, LuaSocket and lua-cjson. The exit should take
-- about flush_timeout: the workers' flushes share one deadline.
package.path = "./?.lua;./spec/?.lua;" .. package.path
local helpers = require("spec.helpers")
local openresty = require("spec.support.openresty")
local collector_lib = require("spec.support.collector")

local FLUSH_TIMEOUT = 3
local rounds = tonumber(arg[1]) or 1

for round = 1, rounds do
  local endpoint = ("http://127.0.0.1:%d/access/api/v1/analytics"):format(collector_lib.free_port())
  local shop = openresty.start({ endpoint = endpoint, workers = 2, files = { ["index.html"] = "home" },
    worker_options = ("flush_timeout = %d, max_retries = 100, retry_base = 0.05, retry_max = 0.2,")
      :format(FLUSH_TIMEOUT) })
  local jar = os.tmpname()
  for _ = 1, 6 do openresty.get(shop, jar, "/") end
  local started = helpers.now()
  local exited = shop:quit(30)
  local took = helpers.now() - started
  shop:stop()
  os.remove(jar)
  print(("round %d: nginx -s quit took %.2f s with the collector down (flush_timeout = %d)%s")
    :format(round, took, FLUSH_TIMEOUT, exited and "" or ", and had not exited"))
end
