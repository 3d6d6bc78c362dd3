-- The WAN rows: one process offers events at a steady rate to a collector whose
-- answers come a round trip late, for a fixed time, and counts what was delivered,
-- what emit refused, and the CPU it spent.
--   lua5.4 bench/wan.lua --url URL --body-template FILE [--rate 4000] [--seconds 10]
--     [--max-in-flight N|auto] [--http-version 1.1|2|...] [--ca-file F] [--seq 1]
--     [--series FILE] [--overload-at S --overload-for D --control URL]
-- Options left out keep dukanext's defaults (the point of the default rows). Events are
-- emitted on a schedule (rate x elapsed time), not as fast as deliveries allow, so a
-- client that cannot keep up fills max_queue and emit refuses with QUEUE_FULL, as in a
-- storefront. --series writes "seconds in_flight_limit in_flight latency_ms" every
-- 100 ms (the picture of auto in README). --overload-at asks the collector (its
-- control URL) to answer 503 for D seconds from S seconds into the run.
-- Prints one JSON line: events_per_s (delivered during the run / its length), offered,
-- sent, refused, cpu_us_per_event, and the client's own connection counters when it
-- has them.
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/lib.lua")
lib.use_module_build()
local dn = require("dukanext")

local args = lib.args(arg)
local RATE = args.rate or 4000
local SECONDS = args.seconds or 10
local SEQ = args.seq or 1
assert(args.url, "--url is required")

local client = dn.new({
  endpoint = args.url,
  max_in_flight = args.max_in_flight,
  http_version = args.http_version and tostring(args.http_version),
  ca_file = args.ca_file,
  max_retries = 0,
})
local series = args.series and assert(io.open(args.series, "w"))

local emit = client.emit
local metadata = lib.metadata
local emitted, refused = 0, 0
local w0, c0 = lib.wall(), lib.cpu()
local next_sample = 0
local overload_asked = not args.overload_at
while true do
  local elapsed = lib.wall() - w0
  if elapsed >= SECONDS then break end
  if not overload_asked and elapsed >= args.overload_at then
    overload_asked = true
    local http = require("socket.http")
    assert(http.request(args.control .. "/_collector/overload?seconds=" .. (args.overload_for or 1), ""))
  end
  local due = math.floor(RATE * elapsed)
  while emitted < due do
    if not emit(client, lib.EVENT, metadata(SEQ + emitted)) then refused = refused + 1 end
    emitted = emitted + 1
  end
  client:flush(0.001)
  if series and elapsed >= next_sample then
    local s = client:stats()
    series:write(string.format("%.2f %d %d %.1f\n", elapsed, s.in_flight_limit or s.in_flight,
      s.in_flight, s.latency_ms or 0))
    next_sample = next_sample + 0.1
  end
end
local c1, w1 = lib.cpu(), lib.wall()
local s = client:stats()
if series then series:close() end
client:close()

lib.emit_result({
  rate = RATE,
  seconds = w1 - w0,
  offered = emitted,
  sent = s.sent,
  failed = s.failed,
  refused = refused,
  events_per_s = s.sent / (w1 - w0),
  cpu_us_per_event = s.sent > 0 and (c1 - c0) / s.sent * 1e6 or nil,
  in_flight_limit = s.in_flight_limit,
  latency_ms = s.latency_ms,
  connects = s.connects,
  tls_resumed = s.tls_resumed,
})
