-- A host with its own event loop (luv, libuv's Lua binding): dukanext is pumped only
-- when there is something to do, never on a fixed tick. The loop watches two things:
--   dn.poll_fd()       a descriptor (epoll) that turns readable when a transfer's
--                      socket has work: connected, answer arrived, ... nil where
--                      the OS has no single one (Windows, macOS, the BSDs): there
--                      next_timeout() alone wakes the loop, at most 0.01 s apart
--                      while a transfer runs.
--   dn.next_timeout()  seconds until a pump is due whatever the descriptor says (a
--                      queued event, a retry, curl's own timeouts), nil when idle.
-- After every pump and every emit the timer is set again from next_timeout().
--
--   lua5.4 examples/luv_loop.lua <endpoint> [events]     (or DUKANEXT_ENDPOINT)
--
-- Needs Debian's lua-luv (`require("luv")`), for Lua 5.1-5.4 and LuaJIT.
local uv = require("luv")
local dn = require("dukanext")

local endpoint = arg[1] or os.getenv("DUKANEXT_ENDPOINT")
if not endpoint then
  io.stderr:write("usage: luv_loop.lua <endpoint> [events]\n")
  os.exit(2)
end
local event_count = tonumber(arg[2]) or 10

dn.configure({
  endpoint = endpoint,
  on_error = function(err)
    io.stderr:write(("analytics: %s not delivered: %s\n"):format(tostring(err.event), err.code))
  end,
})

-- The glue: one poll handle on dukanext's descriptor, one timer, one function.
local pumps = 0
local fd = dn.poll_fd()
local poll = fd and uv.new_poll(fd)
local timer = uv.new_timer()
local on_idle -- the application's: called when nothing is left to deliver

local function pump_and_rearm()
  pumps = pumps + 1
  dn.pump()
  local due = dn.next_timeout()
  if due then
    timer:start(math.ceil(due * 1000), 0, pump_and_rearm)
  else
    timer:stop()
    if on_idle then on_idle() end
  end
end

-- emit queues the event; the next loop iteration starts it (next_timeout() is 0).
local function emit(event, metadata, fields)
  local ok, err = dn.emit(event, metadata, fields)
  local due = dn.next_timeout()
  if due then timer:start(math.ceil(due * 1000), 0, pump_and_rearm) end
  return ok, err
end

if poll then
  poll:start("r", function(err)
    if err then io.stderr:write("analytics: poll: " .. tostring(err) .. "\n") end
    pump_and_rearm()
  end)
end

-- The application: one event every 100 ms, then quit once they are delivered.
local emitted = 0
local app = uv.new_timer()
app:start(0, 100, function()
  emitted = emitted + 1
  local ok, err = emit("app_tick", { n = emitted })
  if not ok then io.stderr:write("analytics: " .. err .. "\n") end
  if emitted == event_count then app:stop() end
end)

function on_idle()
  if emitted == event_count then
    for _, h in ipairs({ app, timer, poll }) do h:close() end -- poll last: it may be nil
  end
end

uv.run()
-- Anything still undelivered (the loop was stopped early): at most two seconds more.
dn.flush(2)
local s = dn.stats()
print(("events=%d sent=%d failed=%d pumps=%d"):format(event_count, s.sent, s.failed, pumps))
