-- wrk script of rows 2 and 3: the same PUT as dukanext's, body and headers, with a
-- counter in the body so that no two requests are byte-identical (the collector drops
-- duplicates, which would lighten its work).
--   BENCH_BODY_TEMPLATE=FILE BENCH_SEQ=N wrk -t1 -c16 -d3 -s bench/wrk_put.lua URL
-- FILE: three lines, body prefix, body suffix, User-Agent (written by bench/run).
local f = assert(io.open(assert(os.getenv("BENCH_BODY_TEMPLATE"), "BENCH_BODY_TEMPLATE"), "rb"))
local text = f:read("*a")
f:close()
local prefix, suffix, user_agent = text:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n?$")
assert(prefix, "not a body template")

local seq = tonumber(os.getenv("BENCH_SEQ") or "1")
local format = string.format

wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = user_agent
wrk.headers["X-Dukanext-Attempt"] = "1"
wrk.headers["Accept"] = "*/*" -- curl, hence dukanext, sends it too

function request()
  seq = seq + 1
  wrk.headers["Idempotency-Key"] = format("00000000-0000-4000-8000-%012d", seq)
  return wrk.format(nil, nil, nil, prefix .. seq .. suffix)
end

-- One machine-readable line for bench/run.
function done(summary, latency, requests)
  local non_2xx = summary.errors.status
  io.stdout:write(format('{"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, non_2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
