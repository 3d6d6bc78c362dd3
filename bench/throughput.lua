-- Rows 2 and 3 (and 7): events delivered per second end to end by one process that
-- emits and pumps, and the CPU that process spent per delivered event.
--   lua5.4 bench/throughput.lua --url URL --body-template FILE [--n 60000] [--seq 1]
--     [--max-in-flight 16|auto] [--mode steady|burst] [--http-version 1.1|2|...] [--ca-file F]
-- steady: keeps a backlog of 4 x max_in_flight events queued, emitting as deliveries
--   free room, and waits in flush(0.001) (curl_multi_poll, not a spin) in between: the
--   loop of a host that produces events all the time.
-- burst: emits all n first, then one flush().
-- RSS (VmRSS) is sampled every N/20 events: rss_first is the sample once a tenth of
-- the events went out (allocator and Lua heap warmed up), rss_last the one at the end.
-- Prints one JSON line: events_per_s, cpu_us_per_event (process CPU: emit, pump,
-- libcurl, Lua's GC; the collector is another process), wall_s, cpu_s, sent, failed.
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/lib.lua")
lib.use_module_build()
local dn = require("dukanext")

local args = lib.args(arg)
local N = args.n or 60000
local SEQ = args.seq or 1
local AUTO = args.max_in_flight == "auto"
-- With auto, the backlog and the warm-up are those of auto's cap (256).
local IN_FLIGHT = AUTO and 256 or args.max_in_flight or 16
local MODE = args.mode or "steady"
assert(args.url, "--url is required")

local client = dn.new({
  endpoint = args.url,
  max_in_flight = AUTO and "auto" or IN_FLIGHT,
  max_queue = N + 1,
  max_queue_bytes = 1024 * 1024 * 1024,
  -- lib.args reads "1.1" and "2" as numbers.
  http_version = args.http_version and tostring(args.http_version),
  ca_file = args.ca_file,
  max_retries = 0,
})

local emit = client.emit
local metadata = lib.metadata

-- Connections up before the clock starts, as wrk connects before it counts.
do
  for i = 1, IN_FLIGHT do emit(client, lib.EVENT, metadata(SEQ - i)) end
  assert(client:flush(10), "warm-up did not deliver")
end
local before = client:stats()
collectgarbage()

local rss_samples = {}
local w0, c0 = lib.wall(), lib.cpu()
if MODE == "burst" then
  for i = 0, N - 1 do
    emit(client, lib.EVENT, metadata(SEQ + i))
  end
  client:flush()
else
  local backlog = 4 * IN_FLIGHT
  local emitted, pending = 0, 0
  local rss_every, rss_next = math.max(1, N // 20), math.max(1, N // 10)
  while true do
    while emitted < N and pending < backlog do
      emit(client, lib.EVENT, metadata(SEQ + emitted))
      emitted = emitted + 1
      pending = pending + 1
      if emitted >= rss_next then
        rss_samples[#rss_samples + 1] = lib.rss()
        rss_next = rss_next + rss_every
      end
    end
    local done, _, left = client:flush(0.001)
    if done then
      if emitted >= N then break end
      pending = 0
    else
      pending = left
    end
  end
end
local c1, w1 = lib.cpu(), lib.wall()
local rss_max = 0
for _, v in ipairs(rss_samples) do rss_max = math.max(rss_max, v) end

local s = client:stats()
local sent, failed = s.sent - before.sent, s.failed - before.failed
if sent ~= N then
  io.stderr:write(string.format("throughput: %d of %d delivered, %d failed\n", sent, N, failed))
  os.exit(1)
end
client:close()

lib.emit_result({
  mode = MODE,
  n = N,
  max_in_flight = AUTO and "auto" or IN_FLIGHT,
  http_version = args.http_version and tostring(args.http_version) or "default",
  events_per_s = N / (w1 - w0),
  cpu_us_per_event = (c1 - c0) / N * 1e6,
  wall_s = w1 - w0,
  cpu_s = c1 - c0,
  sent = sent,
  failed = failed,
  rss_first = rss_samples[1],
  rss_last = lib.rss(),
  rss_max = rss_max,
})
