-- The demo: starts the bundled collector (nginx on 127.0.0.1, a free port), runs the
-- storefront visit of examples/storefront.lua through dukanext, and prints what the
-- collector received. Run it with `./dev.sh demo`, or from the repository's root:
--   LUA_CPATH="build/?.so;;" lua5.4 examples/demo.lua
package.path = "./?.lua;" .. package.path

local collector = require("spec.support.collector").start({})
print("collector listening at " .. collector.url)

local function run_storefront()
  local chunk = assert(loadfile("examples/storefront.lua"))
  arg = { [0] = "examples/storefront.lua", collector.url }
  return chunk(collector.url)
end

local ok, delivered = pcall(run_storefront)
local events = collector:wait_events(7, 5)
local lines = collector:event_lines()
collector:stop()
if not ok then error(delivered, 0) end

print(("\nthe collector received %d events:"):format(#events))
for i, e in ipairs(events) do
  local md = e.metadata or {}
  print(("%2d. %-14s url=%-26s customer=%-26s sessionStartPage=%s"):format(
    i, e.event, tostring(md.url), e.hasCustomerAccount and e.customersId or "(anonymous)",
    tostring(e.sessionStartPage)))
end
if lines[1] then
  print("\nthe first one, as the collector received it:\n" .. lines[1])
end
if not delivered or #events ~= 7 then
  io.stderr:write("demo: not every event arrived\n")
  os.exit(1)
end
