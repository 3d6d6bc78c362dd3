-- Runs the storefront example (examples/openresty/nginx.conf) until Enter, Ctrl-C
-- or end of stdin, sending its events to the bundled collector, or to the given
-- endpoint:
--
--   lua5.4 examples/openresty/run.lua [--endpoint URL] [--port N] [--workers N]
--
-- Needs the LuaJIT build of the module (build/lua-luajit/dukanext.so, or
-- DUKANEXT_LUAJIT_CPATH), nginx with its Lua module, LuaSocket and lua-cjson.
-- On the way out it stops nginx with -s quit (the workers flush) and prints what
-- the collector received.
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
package.path = here .. "/../../?.lua;" .. package.path
local socket = require("socket")
local launch = dofile(here .. "/launch.lua")

local opts = { workers = 2 }
local i = 1
while arg[i] do
  local a, v = arg[i], arg[i + 1]
  if a == "--endpoint" and v then
    opts.endpoint = v
  elseif (a == "--port" or a == "--workers") and tonumber(v) then
    opts[a:sub(3)] = tonumber(v)
  else
    io.stderr:write("usage: run.lua [--endpoint URL] [--port N] [--workers N]\n")
    os.exit(2)
  end
  i = i + 2
end

local collector
if not opts.endpoint then
  collector = require("spec.support.collector").start({ workers = 2 })
  opts.endpoint = collector.url
end
local ok, shop = pcall(launch.start, opts)
if not ok then
  if collector then collector:stop() end
  io.stderr:write(tostring(shop), "\n")
  os.exit(1)
end

print(("storefront  %s  (nginx master %d, workers %s)"):format(
  shop.base, shop.pid, table.concat(shop:worker_pids(), " ")))
print("events to   " .. opts.endpoint)
print("config      " .. shop.conf)
print("logs        " .. shop.prefix .. "/logs/")
print("try:")
print(("  curl -c jar -b jar %s/products/trail-runner-3"):format(shop.base))
print(("  curl -c jar -b jar '%s/api/cart?product=p_81&quantity=2'"):format(shop.base))
print("Enter, Ctrl-C or end of stdin stops it.")
io.stdout:flush()

local stdin = { getfd = function() return 0 end }
pcall(function()
  while true do
    local readable = socket.select({ stdin }, nil, 0.5)
    if readable[1] then
      io.read("*l")
      return
    end
  end
end)

io.write("nginx -s quit: the workers flush their events ... ")
io.stdout:flush()
print(shop:quit(15) and "done" or "timed out")
if collector then
  local events = collector:events()
  print(("the collector received %d events"):format(#events))
  for k = math.max(1, #events - 9), #events do
    local e = events[k]
    print(("  %-12s %-40s user %s"):format(e.event,
      tostring(e.metadata.url or e.metadata.productId), e.userId))
  end
  collector:stop()
end
shop:stop()
