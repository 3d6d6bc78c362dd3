-- Outage: the collector stops while events keep coming at a steady rate, then comes
-- back on the same port. Memory stays bounded by max_queue / max_queue_bytes (RSS of
-- the process), refusals are counted with their reason in stats(), and every event
-- emit accepted is delivered once the collector is back.
--
-- Each run is a process of its own (the interpreter under test), so that its RSS is
-- the module's and nothing else's; it drives its own collector.
local helpers = require("spec.helpers")

local RATE = 2000   -- events a second
local SECONDS = 4   -- of outage

local CHILD = [==[
local mode, rate, seconds = ...
rate, seconds = tonumber(rate), tonumber(seconds)
local socket = require("socket")
local collector = require("spec.support.collector")
local dn = require("dukanext")

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local status = f:read("*a")
  f:close()
  return tonumber(status:match("VmRSS:%s*(%d+)"))
end

local c = collector.start()
local port = c.port
local opts = {
  endpoint = c.url, timeout = 2, connect_timeout = 1,
  -- Enough attempts to outlast the outage: retries keep an event queued, never lost.
  max_retries = 100, retry_base = 0.05, retry_max = 0.5,
}
if mode == "max_queue" then opts.max_queue = 5000 else opts.max_queue_bytes = 1024 * 1024 end
local cl = dn.new(opts)

local PAD = string.rep("0123456789abcdef", 10)
local accepted, refused, reasons = {}, 0, {}
local n = 0
local function emit_one()
  n = n + 1
  local ok, err = cl:emit("outage", { i = n, url = "/p/" .. n, pad = PAD })
  if ok == true then
    accepted[#accepted + 1] = n
  else
    refused = refused + 1
    local code = tostring(err):match("^([%u_]+): ") or tostring(err)
    reasons[code] = (reasons[code] or 0) + 1
  end
end

-- Up: a few events go through.
for _ = 1, 50 do emit_one() end
assert(cl:flush(10) == true, "not delivered before the outage")
local before = #accepted
assert(#c:events() == before, #c:events() .. " events logged for " .. before .. " accepted")
c:stop()

-- Down: a steady rate of emits; RSS when the first refusal comes and at the end.
collectgarbage()
local rss_start = rss_kb()
local rss_full, stats_full
local t0 = socket.gettime()
while socket.gettime() - t0 < seconds do
  local due = math.floor((socket.gettime() - t0) * rate)
  while n - 50 < due do emit_one() end
  dn.pump()
  if refused > 0 and not rss_full then
    collectgarbage()
    rss_full = rss_kb()
    stats_full = cl:stats()
  end
  socket.sleep(0.002)
end
collectgarbage()
local rss_end = rss_kb()
local s = cl:stats()

-- Back, on the same port.
local c2 = collector.start({ port = port })
local flushed = cl:flush(60)
local events = c2:events()
local _, doubled_keys = c2:answers_by_key()
local seen, duplicates = {}, 0
for _, e in ipairs(events) do
  local i = e.metadata.i
  if seen[i] then duplicates = duplicates + 1 end
  seen[i] = true
end
local missing = 0
for k = before + 1, #accepted do
  if not seen[accepted[k]] then missing = missing + 1 end
end
local after = cl:stats()
c2:stop()

local out = {
  emitted = n, accepted = #accepted, refused = refused,
  refused_queue_full = reasons.QUEUE_FULL or 0,
  rss_start = rss_start, rss_full = rss_full or -1, rss_end = rss_end,
  full_pending = stats_full and stats_full.queued + stats_full.in_flight or -1,
  queued = s.queued, in_flight = s.in_flight, queued_bytes = s.queued_bytes,
  dropped = s.dropped, dropped_max_queue = s.dropped_max_queue,
  dropped_max_queue_bytes = s.dropped_max_queue_bytes, failed_during = s.failed,
  flushed = flushed == true and 1 or 0, delivered_after = #events,
  duplicates = duplicates, missing = missing, doubled_keys = #doubled_keys,
  sent = after.sent, failed = after.failed, before = before,
}
for k, v in pairs(out) do io.write(k, "=", tostring(v), "\n") end
]==]

-- Runs the outage in a child process; answers its numbers.
local function run_outage(mode)
  -- ASan's quarantine holds freed memory on purpose; without it RSS means what it says.
  local asan = "ASAN_OPTIONS=" .. helpers.quote((os.getenv("ASAN_OPTIONS") or "") .. ":quarantine_size_mb=0")
  local rc, out, err = helpers.run_lua(CHILD, { mode, tostring(RATE), tostring(SECONDS) }, { asan })
  assert.equals(0, rc, "the outage process failed:\n" .. out .. err)
  local r = {}
  for k, v in out:gmatch("([%w_]+)=(%-?%d+)\n") do r[k] = tonumber(v) end
  assert.is_number(r.accepted, "no numbers from the outage process:\n" .. out .. err)
  return r
end

-- What both variants promise.
local function assert_outage(r)
  -- The rate was kept (nearly: less on a slow run) and the queue filled: some were
  -- accepted, the rest refused.
  assert(r.emitted >= helpers.at_least(RATE * SECONDS * 0.9) + 50, "only " .. r.emitted .. " emits")
  assert(r.refused > 0, "nothing was refused")
  assert.equals(r.emitted, r.accepted + r.refused)
  -- Every refusal is QUEUE_FULL, counted in dropped, with its reason.
  assert.equals(r.refused, r.refused_queue_full)
  assert.equals(r.refused, r.dropped)
  assert.equals(r.dropped, r.dropped_max_queue + r.dropped_max_queue_bytes)
  -- Retries keep events queued through the outage; none failed.
  assert.equals(0, r.failed_during)
  -- Memory: once the queue is full, further seconds of emits do not grow RSS.
  assert(r.rss_full > 0, "the queue never filled")
  local growth = r.rss_end - r.rss_full
  assert(growth < 2048, ("RSS grew by %d KiB after the queue was full (%d -> %d KiB)"):format(
    growth, r.rss_full, r.rss_end))
  -- Back up: every accepted event delivered once, in the counters and at the collector.
  assert.equals(1, r.flushed)
  assert.equals(0, r.missing)
  -- Once: one 2xx answer per Idempotency-Key over every request the collector logged.
  assert.equals(0, r.doubled_keys)
  assert.equals(0, r.duplicates)
  assert.equals(r.accepted - r.before, r.delivered_after)
  assert.equals(r.accepted, r.sent)
  assert.equals(0, r.failed)
end

describe("an outage of the collector #timing", function()
  it("with max_queue = 5000: bounded memory, refusals dropped_max_queue, everything else delivered", function()
    local r = run_outage("max_queue")
    assert_outage(r)
    assert.equals(5000, r.full_pending)
    assert.equals(5000, r.queued + r.in_flight)
    assert(r.dropped_max_queue > 0)
    assert.equals(0, r.dropped_max_queue_bytes)
    -- 5000 events of ~400 bytes: a few MiB, nowhere near unbounded.
    local held = r.rss_end - r.rss_start
    assert(held < 16 * 1024, "a queue of 5000 events holds " .. held .. " KiB of RSS")
  end)

  it("with max_queue_bytes = 1 MiB: bounded memory, refusals dropped_max_queue_bytes, everything else delivered", function()
    local r = run_outage("max_queue_bytes")
    assert_outage(r)
    assert(r.queued_bytes <= 1024 * 1024, "queued_bytes " .. r.queued_bytes .. " over max_queue_bytes")
    assert(r.queued_bytes > 1024 * 1024 - 2048, "the byte budget was not used: " .. r.queued_bytes)
    assert(r.dropped_max_queue_bytes > 0)
    assert.equals(0, r.dropped_max_queue)
    local held = r.rss_end - r.rss_start
    assert(held < 8 * 1024, "a queue of 1 MiB holds " .. held .. " KiB of RSS")
  end)
end)
