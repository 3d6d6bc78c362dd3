-- Every measurement of issue 5 (and issue 6's spool row) in one run, against one
-- collector (nginx, one worker, bench mode), printed as one table of figures, ratios
-- and targets. Started by bench/run; see the usage below.
--
-- The ratios are what to read: each compares two figures measured minutes apart on
-- the same machine against the same collector, so most of a shared machine's noise
-- cancels. Throughput rounds alternate wrk, dukanext and the C loop for the same
-- reason. A missed target is printed, never an error: the exit status is non-zero
-- only when a measurement broke (a script failed, events were lost).
local USAGE = [[
usage: bench/run [--short] [--wan] [--rounds N]
  --short    small counts, one round (CI: proves the bench still works, well under 2 min)
  --wan      only the rows of concurrency and connections: loopback throughput with
             defaults against a fixed 16, HTTP/2 against HTTP/1.1 over TLS, the WAN rows
  --rounds N throughput rounds (default 3; --short: 1)
environment: DUKANEXT_CPATH (default build/?.so), DUKANEXT_BUILD (default build)]]

local BENCH = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")
package.path = BENCH .. "/../?.lua;" .. package.path

local short, wan_only, rounds = false, false, nil
do
  local i = 1
  while arg[i] do
    if arg[i] == "--short" then
      short = true
    elseif arg[i] == "--wan" then
      wan_only = true
    elseif arg[i] == "--rounds" and tonumber(arg[i + 1]) then
      rounds = tonumber(arg[i + 1])
      i = i + 1
    else
      io.stderr:write(USAGE, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end
rounds = rounds or (short and 1 or 3)

-- How much of everything: full, then --short.
local function pick(full, brief) return short and brief or full end
local COUNT = {
  emit = pick(100000, 5000),
  emit_reps = pick(7, 3),
  spool_always = pick(5000, 300),
  spool_other = pick(50000, 3000),
  throughput = pick(100000, 20000),
  wrk_seconds = pick(5, 2),
  rss = pick(1000000, 20000),
  socket_http = pick(5000, 300),
  cosocket = pick(100000, 5000),
  lua_curl = pick(20000, 500),
  pump = pick(1000000, 100000),
  memory = pick(200000, 20000),
  h2 = pick(50000, 2000),
  wan_seconds = pick(10, 2),
}
-- The WAN rows: round trips (seconds the collector waits before each answer), and
-- the rate emit is offered at, above the 3 000 events/s target.
local WAN_DELAYS = short and { 0.05 } or { 0.05, 0.15 }
local WAN_RATE = 4000

local cjson = require("cjson")
local collector_lib = require("spec.support.collector")

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns ok, stdout+stderr.
local function sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\""))
  local out = p:read("a")
  p:close()
  local text, rc = out:match("^(.-)__rc=(%d+)%s*$")
  return tonumber(rc) == 0, text or out
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local ROOT = trim(select(2, sh("cd " .. quote(BENCH .. "/..") .. " && pwd")))
local BUILD = os.getenv("DUKANEXT_BUILD") or ROOT .. "/build"
local CPATH = os.getenv("DUKANEXT_CPATH") or BUILD .. "/?.so"
if CPATH:sub(1, 1) ~= "/" then CPATH = ROOT .. "/" .. CPATH:gsub("^%./", "") end

local broken = {}
local function broke(what, detail)
  broken[#broken + 1] = what
  io.stderr:write("bench: ", what, " broke:\n", detail or "", "\n")
end

local function progress(...)
  io.stderr:write("bench: ", string.format(...), "\n")
end

-- Build what is missing: the module, and the C reference loop (always rebuilt:
-- it is one file and takes a second).
do
  local module = CPATH:gsub("%?", "dukanext")
  if not io.open(module) then
    progress("building %s", module)
    local ok, out = sh("cmake -S " .. quote(ROOT) .. " -B " .. quote(BUILD) .. " && cmake --build "
      .. quote(BUILD) .. " -j2")
    if not ok then
      io.stderr:write(out, "\nbench: the build failed\n")
      os.exit(1)
    end
  end
end
local ok_tmp, TMP = sh("mktemp -d \"${TMPDIR:-/tmp}/dukanext-bench.XXXXXX\"")
assert(ok_tmp, TMP)
TMP = trim(TMP)
local MULTI_LOOP = TMP .. "/multi_loop"
do
  local ok, out = sh("cc -O2 -Wall -Wextra -Werror -o " .. quote(MULTI_LOOP) .. " "
    .. quote(BENCH .. "/multi_loop.c") .. " -lcurl")
  if not ok then broke("multi_loop build", out) end
end
local HAVE_WRK = sh("command -v wrk")
local HAVE_LUA_CURL = sh("lua5.1 -e 'require(\"curl\")'")
local HAVE_SOCKET = sh("lua5.4 -e 'require(\"socket.http\")'")

package.cpath = CPATH .. ";" .. package.cpath
local dn = require("dukanext")

progress("starting the collector (nginx, one worker, bench mode)")
local collector = collector_lib.start({ bench = true, tls = true, http2 = "tls" })
local URL, TLS_URL, CA = collector.url, collector.tls_url, collector.ca_file

local function cleanup()
  collector:stop()
  sh("rm -rf " .. quote(TMP))
end

-- The body every contender sends: the bytes dukanext sent for one add_to_cart, with
-- its counter cut out, so prefix .. n .. suffix is the same body with counter n.
local TEMPLATE = TMP .. "/body_template"
local BODY_BYTES
do
  local MARK = 987654321
  local c = dn.new({ endpoint = URL })
  assert(c:emit("add_to_cart", { url = "/products/running-shoes", productId = "p_81", quantity = MARK }))
  assert(c:flush(10), "the template event was not delivered")
  c:close()
  local line = assert(collector:event_lines()[1], "the collector logged no event")
  local prefix, suffix = line:match("^(.-)" .. MARK .. "(.*)$")
  assert(prefix, "no counter in " .. line)
  BODY_BYTES = #line
  local f = assert(io.open(TEMPLATE, "wb"))
  f:write(prefix, "\n", suffix, "\n", "dukanext-lua/", dn._VERSION, "\n")
  f:close()
end

-- Runs one measurement script and returns its JSON line, or nil when it broke.
local function measure(what, cmd)
  progress("%s", what)
  local ok, out = sh(cmd)
  local result
  for line in out:gmatch("[^\n]+") do
    if line:match("^{") then result = cjson.decode(line) end
  end
  if not ok or not result then
    broke(what, out)
    return nil
  end
  return result
end

local function lua54(script, args)
  return "DUKANEXT_CPATH=" .. quote(CPATH) .. " lua5.4 " .. quote(BENCH .. "/" .. script) .. " " .. args
end

-- Distinct counters for every run, so no two requests of the run carry the same body.
local next_seq = 1
local function seq_for(n)
  local s = next_seq
  next_seq = next_seq + n + 1000
  return s
end

local median
do
  local lib = dofile(BENCH .. "/lib.lua")
  median = lib.median
end

local function medians(list, key)
  local values = {}
  for _, r in ipairs(list) do values[#values + 1] = r[key] end
  return median(values)
end

local R = {}

-- 1. emit cost, and issue 6's spool rows.
R.spool = {}
if not wan_only then
  R.emit = measure("emit cost", lua54("emit_cost.lua", "--n " .. COUNT.emit .. " --reps "
    .. COUNT.emit_reps))
  for _, mode in ipairs({ "always", "interval", "never" }) do
    local n = mode == "always" and COUNT.spool_always or COUNT.spool_other
    local dir = TMP .. "/spool-" .. mode
    R.spool[mode] = measure("emit cost, spool_sync=" .. mode, lua54("emit_cost.lua",
      "--n " .. n .. " --reps 3 --spool " .. quote(dir) .. " --spool-sync " .. mode))
    sh("rm -rf " .. quote(dir))
  end
end

-- 2, 3. Throughput and CPU per event, in alternating rounds.
local function wrk_round()
  if not HAVE_WRK or wan_only then return nil end
  local seq = seq_for(10000000)
  -- bash's `times` prints the CPU its children (wrk) used: user then system.
  local cmd = "bash -c " .. quote("BENCH_BODY_TEMPLATE=" .. quote(TEMPLATE) .. " BENCH_SEQ=" .. seq
    .. " wrk -t1 -c16 -d" .. COUNT.wrk_seconds .. "s -s " .. quote(BENCH .. "/wrk_put.lua") .. " "
    .. quote(URL) .. " && times")
  progress("wrk -t1 -c16 -d%ds", COUNT.wrk_seconds)
  local ok, out = sh(cmd)
  local r = out:match("\n({[^\n]*})")
  if not ok or not r then
    broke("wrk", out)
    return nil
  end
  r = cjson.decode(r)
  local um, us, sm, ss = out:match("\n%d+m[%d.]+s %d+m[%d.]+s\n(%d+)m([%d.]+)s (%d+)m([%d.]+)s")
  local cpu = um and (um * 60 + us + sm * 60 + ss) or nil
  if r.non_2xx > 0 or r.socket_errors > 0 then
    broke("wrk", out)
  end
  return {
    events_per_s = r.requests / (r.duration_us / 1e6),
    cpu_us_per_event = cpu and cpu / r.requests * 1e6 or nil,
  }
end

local tp, wrk, multi, tp_auto = {}, {}, {}, {}
for round = 1, rounds do
  progress("throughput round %d of %d", round, rounds)
  wrk[#wrk + 1] = wrk_round()
  tp[#tp + 1] = measure("dukanext throughput", lua54("throughput.lua", "--url " .. quote(URL)
    .. " --body-template " .. quote(TEMPLATE) .. " --n " .. COUNT.throughput .. " --seq "
    .. seq_for(COUNT.throughput)))
  if not wan_only then
    multi[#multi + 1] = measure("C multi loop", quote(MULTI_LOOP) .. " " .. quote(URL) .. " "
      .. quote(TEMPLATE) .. " " .. COUNT.throughput .. " " .. seq_for(COUNT.throughput) .. " 16")
  end
  tp_auto[#tp_auto + 1] = measure("dukanext throughput, max_in_flight=auto", lua54("throughput.lua",
    "--url " .. quote(URL) .. " --max-in-flight auto --body-template " .. quote(TEMPLATE) .. " --n "
    .. COUNT.throughput .. " --seq " .. seq_for(COUNT.throughput)))
end

-- 4. The alternatives.
if not wan_only then
  if HAVE_SOCKET then
    R.socket_http = measure("LuaSocket socket.http", "lua5.4 " .. quote(BENCH .. "/alternatives/socket_http.lua")
      .. " --url " .. quote(URL) .. " --body-template " .. quote(TEMPLATE) .. " --n " .. COUNT.socket_http
      .. " --seq " .. seq_for(COUNT.socket_http))
  end
  if HAVE_LUA_CURL then
    R.lua_curl = measure("lua-curl (Lua 5.1)", "lua5.1 " .. quote(BENCH .. "/alternatives/lua_curl.lua")
      .. " --url " .. quote(URL) .. " --body-template " .. quote(TEMPLATE) .. " --n " .. COUNT.lua_curl
      .. " --seq " .. seq_for(COUNT.lua_curl))
  end

  R.cosocket = measure("ngx.socket.tcp cosocket loop", "lua5.4 " .. quote(BENCH .. "/alternatives/cosocket.lua")
    .. " --url " .. quote(URL) .. " --body-template " .. quote(TEMPLATE) .. " --n " .. COUNT.cosocket
    .. " --seq " .. seq_for(COUNT.cosocket))

  -- 5, 6. Pump and memory.
  R.pump = measure("pump cost", lua54("pump_cost.lua", "--n " .. COUNT.pump))
  R.memory = measure("memory per queued event", lua54("memory.lua", "--n " .. COUNT.memory))
  R.rss = measure("RSS across " .. COUNT.rss .. " delivered events", lua54("throughput.lua", "--url "
    .. quote(URL) .. " --body-template " .. quote(TEMPLATE) .. " --n " .. COUNT.rss .. " --seq "
    .. seq_for(COUNT.rss)))
end

-- 7. HTTP/2 over TLS against HTTP/1.1 over TLS, same listener (ALPN decides).
for _, version in ipairs({ "1.1", "2" }) do
  R["tls_" .. version] = measure("TLS, http_version=" .. version, lua54("throughput.lua", "--url "
    .. quote(TLS_URL) .. " --ca-file " .. quote(CA) .. " --http-version " .. version
    .. " --body-template " .. quote(TEMPLATE) .. " --n " .. COUNT.h2 .. " --seq " .. seq_for(COUNT.h2)))
end

-- h2c (HTTP/2 in the clear, prior knowledge) against HTTP/1.1 in the clear. nginx
-- 1.22 speaks only h2c on a plain "http2" listener, so h2c gets a collector of its
-- own; the HTTP/1.1 figure comes from the main one, measured right before.
R.plain_1_1 = measure("plain, http_version=1.1", lua54("throughput.lua", "--url " .. quote(URL)
  .. " --http-version 1.1 --body-template " .. quote(TEMPLATE) .. " --n " .. COUNT.h2 .. " --seq "
  .. seq_for(COUNT.h2)))
if not wan_only then
  local started, h2c = pcall(collector_lib.start, { bench = true, http2 = true })
  if not started then
    broke("h2c collector", tostring(h2c))
  else
    R.h2c = measure("plain, http_version=2-prior-knowledge", lua54("throughput.lua", "--url "
      .. quote(h2c.url) .. " --http-version 2-prior-knowledge --body-template " .. quote(TEMPLATE)
      .. " --n " .. COUNT.h2 .. " --seq " .. seq_for(COUNT.h2)))
    local h2c_errors = h2c:error_log_text():match("%[error%][^\n]*")
    h2c:stop()
    if h2c_errors then broke("h2c collector", h2c_errors) end
  end
end

local collector_errors = collector:error_log_text():match("%[error%][^\n]*")

-- 8. WAN: each answer a round trip late, TLS with HTTP/2 offered (ALPN), TLS with
-- HTTP/1.1 only (the client offers only http/1.1), and in the clear; defaults against
-- today's fixed max_in_flight = 16. The collector counts connections and resumptions.
R.wan = {}
local WAN_KINDS = {
  { key = "h2", name = "TLS, HTTP/2 offered" },
  { key = "h1", name = "TLS, HTTP/1.1 only", args = " --http-version 1.1" },
  { key = "plain", name = "cleartext HTTP/1.1" },
}
for _, delay in ipairs(WAN_DELAYS) do
  local started, wan = pcall(collector_lib.start, { bench = true, tls = true, http2 = "tls", delay = delay })
  if not started then
    broke("WAN collector", tostring(wan))
  else
    for _, kind in ipairs(WAN_KINDS) do
      local url = kind.key == "plain" and wan.url or wan.tls_url
      for _, config in ipairs({ "auto", "16" }) do
        wan:reset()
        local r = measure(string.format("WAN %d ms, %s, max_in_flight=%s", delay * 1000, kind.name,
          config), lua54("wan.lua", "--url " .. quote(url) .. " --ca-file " .. quote(wan.ca_file)
          .. (kind.args or "") .. (config == "16" and " --max-in-flight 16" or "") .. " --rate "
          .. WAN_RATE .. " --seconds " .. COUNT.wan_seconds .. " --body-template " .. quote(TEMPLATE)
          .. " --seq " .. seq_for(WAN_RATE * COUNT.wan_seconds)))
        if r then
          local seen = wan:connections()
          r.connections, r.tls, r.tls_resumed_seen = seen.connections, seen.tls, seen.tls_resumed
        end
        R.wan[delay .. kind.key .. config] = r
      end
    end
    -- The picture in README (full runs): auto over HTTP/2 at the shortest round trip,
    -- with the collector overloaded (503) for a second in the middle.
    if delay == WAN_DELAYS[1] and not short then
      local series = TMP .. "/series"
      local seconds = COUNT.wan_seconds
      local r = measure("WAN picture: auto through an overload", lua54("wan.lua", "--url "
        .. quote(wan.tls_url) .. " --ca-file " .. quote(wan.ca_file) .. " --rate " .. WAN_RATE
        .. " --seconds " .. seconds .. " --body-template " .. quote(TEMPLATE) .. " --seq "
        .. seq_for(WAN_RATE * seconds) .. " --series " .. quote(series) .. " --overload-at "
        .. seconds / 2 .. " --overload-for 1 --control " .. quote(wan.control_base)))
      if r then
        local ok, out = sh("lua5.4 " .. quote(BENCH .. "/svg.lua") .. " " .. quote(series) .. " "
          .. quote(BENCH .. "/auto-limit.svg") .. " " .. quote(string.format(
          "max_in_flight = \"auto\", TLS + HTTP/2, %d ms round trip, %d events/s offered, 503 for 1 s at %g s",
          delay * 1000, WAN_RATE, seconds / 2)))
        if not ok then broke("svg", out) end
      end
    end
    local wan_errors = wan:error_log_text():match("%[error%][^\n]*")
    wan:stop()
    if wan_errors then broke("WAN collector", wan_errors) end
  end
end
cleanup()
if collector_errors then broke("collector", collector_errors) end

-- The table --------------------------------------------------------------------

local rows = {}
local function fmt(v, unit)
  if v == nil then return "-" end
  if unit == "ev/s" then return string.format("%.0f ev/s", v) end
  if unit == "B" then return string.format("%.0f B", v) end
  if unit == "%" then return string.format("%+.1f %%", v) end
  return string.format("%.3g %s", v, unit)
end
local function ratio(a, b)
  if not a or not b or b == 0 then return nil end
  return a / b
end
-- holds: "yes"/"no" from the figure and the target, "-" when there is no target.
local function row(what, value, unit, against, ref, ref_unit, r, target, holds)
  local verdict = "-"
  if holds ~= nil then verdict = holds and "yes" or "NO" end
  rows[#rows + 1] = {
    what, fmt(value, unit), against or "", ref and fmt(ref, ref_unit or unit) or "",
    r and string.format("%.2fx", r) or (ref and "-" or ""), target or "", verdict,
  }
end

local e = R.emit or {}
row("emit cost (CPU/event)", e.us_emit, "us", "cjson.encode of the body", e.us_cjson, "us",
  ratio(e.us_emit, e.us_cjson), "<= 1.5x", e.ratio and e.ratio <= 1.5)

local tp_eps, tp_cpu = medians(tp, "events_per_s"), medians(tp, "cpu_us_per_event")
local wrk_eps, wrk_cpu = medians(wrk, "events_per_s"), medians(wrk, "cpu_us_per_event")
local multi_eps, multi_cpu = medians(multi, "events_per_s"), medians(multi, "cpu_us_per_event")
local r_wrk = ratio(tp_eps, wrk_eps)
row("delivered, max_in_flight=16", tp_eps, "ev/s", "wrk -t1 -c16 (PUT)", wrk_eps, "ev/s", r_wrk,
  ">= 0.6x", r_wrk and r_wrk >= 0.6)
local r_multi = ratio(tp_eps, multi_eps)
row("", nil, nil, "C multi loop, 16 easy", multi_eps, "ev/s", r_multi, ">= 1x", r_multi and r_multi >= 1)
local r_cpu = ratio(tp_cpu, wrk_cpu)
row("host CPU per delivered event", tp_cpu, "us", "wrk CPU per request", wrk_cpu, "us", r_cpu,
  "<= 2x", r_cpu and r_cpu <= 2)
row("", nil, nil, "C multi loop CPU/event", multi_cpu, "us", ratio(tp_cpu, multi_cpu))

local sh_ = R.socket_http or {}
row("vs LuaSocket socket.http", tp_eps, "ev/s", "socket.http (new conn.)", sh_.events_per_s, "ev/s",
  ratio(tp_eps, sh_.events_per_s), "> 1x", ratio(tp_eps, sh_.events_per_s) and tp_eps > sh_.events_per_s)
row("", tp_cpu, "us", "its CPU/event", sh_.cpu_us_per_event, "us", ratio(tp_cpu, sh_.cpu_us_per_event))
local lc = R.lua_curl or {}
row("vs lua-curl, kept-alive easy", tp_eps, "ev/s", "lua-curl (5.1)", lc.events_per_s, "ev/s",
  ratio(tp_eps, lc.events_per_s), "> 1x", ratio(tp_eps, lc.events_per_s) and tp_eps > lc.events_per_s)
row("", tp_cpu, "us", "its CPU/event", lc.cpu_us_per_event, "us", ratio(tp_cpu, lc.cpu_us_per_event))
local co = R.cosocket or {}
row("vs ngx.socket.tcp cosockets", tp_eps, "ev/s", "16 cosockets in nginx", co.events_per_s, "ev/s",
  ratio(tp_eps, co.events_per_s), "> 1x", ratio(tp_eps, co.events_per_s) and tp_eps > co.events_per_s)
row("", tp_cpu, "us", "nginx worker CPU/event", co.cpu_us_per_event, "us", ratio(tp_cpu, co.cpu_us_per_event))

local p = R.pump or {}
row("pump(), idle", p.us_idle, "us", "", nil, nil, nil, "< 1 us", p.us_idle and p.us_idle < 1)
row("pump(), 16 in flight", p.us_in_flight, "us")

local m = R.memory or {}
row("bytes per queued event", m.accounted_overhead, "B", "beyond the body (" .. fmt(m.body_bytes, "B")
  .. ")", nil, nil, nil, "<= 64 B", m.accounted_overhead and m.accounted_overhead <= 64)
row("", m.rss_overhead, "B", "same, measured as RSS")
local rs = R.rss or {}
local growth = rs.rss_first and rs.rss_last and (rs.rss_last - rs.rss_first) / rs.rss_first * 100
row("RSS over " .. COUNT.rss .. " delivered", growth, "%", "from 10% to 100% of them", nil, nil, nil,
  "within 5 %", growth and math.abs(growth) <= 5)
row("", rs.rss_last and rs.rss_last / 1048576, "MiB", "RSS at the end")

-- --wan prints from here on: the rows it measured.
local wan_rows_from = #rows + 1
local h1, h2 = R["tls_1.1"] or {}, R["tls_2"] or {}
row("HTTP/2 over TLS", h2.events_per_s, "ev/s", "HTTP/1.1 over TLS", h1.events_per_s, "ev/s",
  ratio(h2.events_per_s, h1.events_per_s))
row("", h2.cpu_us_per_event, "us", "CPU/event, HTTP/1.1 TLS", h1.cpu_us_per_event, "us",
  ratio(h2.cpu_us_per_event, h1.cpu_us_per_event))
local p1, pc = R.plain_1_1 or {}, R.h2c or {}
row("h2c (HTTP/2, prior knowledge)", pc.events_per_s, "ev/s", "HTTP/1.1, no TLS", p1.events_per_s, "ev/s",
  ratio(pc.events_per_s, p1.events_per_s))
row("", pc.cpu_us_per_event, "us", "CPU/event, HTTP/1.1", p1.cpu_us_per_event, "us",
  ratio(pc.cpu_us_per_event, p1.cpu_us_per_event))

local auto_eps = medians(tp_auto, "events_per_s")
local r_auto = ratio(auto_eps, tp_eps)
row("loopback, defaults (auto)", auto_eps, "ev/s", "fixed max_in_flight=16", tp_eps, "ev/s", r_auto,
  ">= 0.95x", r_auto and r_auto >= 0.95)
row("", medians(tp_auto, "cpu_us_per_event"), "us", "CPU/event, fixed 16", tp_cpu, "us",
  ratio(medians(tp_auto, "cpu_us_per_event"), tp_cpu))

-- WAN rows: delivered events/s against the fixed 16 of the same round trip and
-- protocol, then what the collector saw: connections (TLS ones resumed), refusals,
-- CPU per delivered event.
local WAN_TARGETS = {
  ["0.05h2"] = { 3000, 4 }, ["0.15h2"] = { 1000, 4 }, ["0.05h1"] = { 1000, 32 },
}
for _, delay in ipairs(WAN_DELAYS) do
  for _, kind in ipairs(WAN_KINDS) do
    local a, f = R.wan[delay .. kind.key .. "auto"] or {}, R.wan[delay .. kind.key .. "16"] or {}
    local target = WAN_TARGETS[delay .. kind.key]
    local holds
    if target and a.events_per_s then
      holds = a.events_per_s >= target[1] and a.connections <= target[2]
    end
    row(string.format("WAN %d ms, %s, defaults", delay * 1000, kind.name), a.events_per_s, "ev/s",
      "fixed max_in_flight=16", f.events_per_s, "ev/s", ratio(a.events_per_s, f.events_per_s),
      target and string.format(">= %d ev/s on <= %d conn.", target[1], target[2]), holds)
    local function seen(r)
      if not r.connections then return "-" end
      local tls = r.tls > 0 and string.format(", TLS %d full + %d resumed", r.tls - r.tls_resumed_seen,
        r.tls_resumed_seen) or ""
      return string.format("%d conn.%s, %d refused, limit %s", r.connections, tls, r.refused,
        tostring(r.in_flight_limit or "-"))
    end
    rows[#rows + 1] = { "", seen(a), "", seen(f), "", "", "" }
    row("", a.cpu_us_per_event, "us", "CPU/event, fixed 16", f.cpu_us_per_event, "us",
      ratio(a.cpu_us_per_event, f.cpu_us_per_event))
  end
end

for _, mode in ipairs({ "always", "interval", "never" }) do
  local s = R.spool[mode] or {}
  row("emit, spool_sync=" .. mode, s.us_emit, "us", "emit without spool", e.us_emit, "us",
    ratio(s.us_emit, e.us_emit))
end

local header = { "measure", "dukanext", "against", "reference", "ratio", "target", "holds" }
local widths = {}
for i, h in ipairs(header) do widths[i] = #h end
for _, r in ipairs(rows) do
  for i = 1, 7 do widths[i] = math.max(widths[i], #r[i]) end
end
local function line(r)
  local cells = {}
  for i = 1, 7 do cells[i] = r[i] .. string.rep(" ", widths[i] - #r[i]) end
  print("| " .. table.concat(cells, " | ") .. " |")
end
print(string.format("\ndukanext %s bench (%s), body %d bytes, collector: nginx 1 worker on loopback, %s",
  dn._VERSION, short and "--short" or "full", BODY_BYTES, os.date("!%Y-%m-%d %H:%M UTC")))
line(header)
local sep = {}
for i = 1, 7 do sep[i] = string.rep("-", widths[i]) end
print("|-" .. table.concat(sep, "-|-") .. "-|")
for i, r in ipairs(rows) do
  if not wan_only or (i >= wan_rows_from and r[2] .. r[4] ~= "-") then line(r) end
end
print("CPU figures are process CPU (user + system) per event; throughput is the median of "
  .. rounds .. " round(s).")
print("The OpenResty storefront latency bench is separate: bench/openresty_latency.sh")

if #broken > 0 then
  io.stderr:write("bench: broken: ", table.concat(broken, ", "), "\n")
  os.exit(1)
end
