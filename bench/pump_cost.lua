-- Row 5: what one dn.pump() costs the host's frame, in CPU microseconds per call.
--   lua5.4 bench/pump_cost.lua [--n 1000000] [--reps 5]
-- idle: one client with an endpoint and nothing queued, the frame of a game between
--   events.
-- in_flight: 16 requests sent to a local socket that never answers (listening, never
--   accepting: the kernel completes the connections), so every pump finds 16 transfers
--   in flight and nothing to do for them, the frame of a game waiting on a slow
--   service. The figure includes the Lua call itself (loop_us is an empty loop
--   calling a Lua function, for scale).
-- Prints one JSON line: us_idle, us_in_flight, us_loop, in_flight.
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/lib.lua")
lib.use_module_build()
local dn = require("dukanext")
local socket = require("socket")

local args = lib.args(arg)
local N = args.n or 1000000
local REPS = args.reps or 5

local function per_call(fn, n)
  local best = {}
  for rep = 1, REPS do
    collectgarbage()
    local c0 = lib.cpu()
    for _ = 1, n do fn() end
    best[rep] = (lib.cpu() - c0) / n * 1e6
  end
  return lib.median(best)
end

local pump = dn.pump
dn.configure({ endpoint = "http://127.0.0.1:9/access/api/v1/analytics" })
local us_loop = per_call(function() end, N)
local us_idle = per_call(pump, N)

local silent = assert(socket.bind("127.0.0.1", 0, 64))
local _, port = silent:getsockname()
local client = dn.new({
  endpoint = "http://127.0.0.1:" .. port .. "/access/api/v1/analytics",
  max_in_flight = 16,
  timeout = 3600,
  connect_timeout = 3600,
})
for i = 1, 16 do assert(client:emit(lib.EVENT, lib.metadata(i))) end
local deadline = lib.wall() + 5
while client:stats().in_flight < 16 and lib.wall() < deadline do
  pump()
end
local in_flight = client:stats().in_flight
-- Let curl finish sending the requests, so that it is only waiting for answers.
for _ = 1, 1000 do pump() end
local us_in_flight = per_call(pump, math.max(1000, N // 10))
in_flight = math.min(in_flight, client:stats().in_flight)
client:close()
silent:close()

lib.emit_result({
  n = N,
  us_idle = us_idle,
  us_in_flight = us_in_flight,
  us_loop = us_loop,
  in_flight = in_flight,
})
if in_flight ~= 16 then os.exit(1) end
