-- Request latency of the OpenResty storefront example with and without analytics.
--
--   bench/openresty_latency.sh [--short] [--rounds N] [--duration S] [--connections C]
--
-- Starts the bundled collector, a null sink (nginx answering 200 to everything,
-- without Lua) and two copies of examples/openresty/nginx.conf (2 workers each;
-- one sends its events to the collector, one to the sink), then runs
--   wrk -t2 -c32 -d5s --latency
-- against the same page without analytics (/no-analytics/...) and with it (a
-- page_view per request from access_by_lua: new visitor each request, or one
-- returning visitor with cookies). Prints p50/p99 from wrk's latency
-- distribution, requests per second and what became of the events. Everything
-- runs on this host: the collector and delivery share its CPUs with the
-- storefront and wrk. --short: one round of 1 s per case.
local socket = require("socket")
local cjson = require("cjson")

package.path = "./?.lua;" .. package.path
local collector_lib = require("spec.support.collector")
local launch = require("examples.openresty.launch")

local opts = { rounds = 1, duration = 5, connections = 32, threads = 2, pace = 16 }
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--short" then
    opts.duration, opts.rounds, opts.short = 1, 1, true
  elseif a == "--rounds" or a == "--duration" or a == "--connections" or a == "--pace" then
    local v = tonumber(arg[i + 1])
    if not v then
      io.stderr:write(a .. " needs a number\n")
      os.exit(2)
    end
    opts[a:sub(3)] = v
    i = i + 1
  else
    io.stderr:write("usage: openresty_latency.sh [--short] [--rounds N] [--duration S]"
      .. " [--connections C] [--pace MS]\n")
    os.exit(2)
  end
  i = i + 1
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local run = launch.run

-- A null sink: nginx without Lua answering {"status":"success"} to every request.
local function start_sink()
  local ok, out = run("mktemp -d \"${TMPDIR:-/tmp}/dukanext-storefront.XXXXXX\"")
  assert(ok, out)
  local dir = out:gsub("%s+$", "")
  local _, uid = run("id -u")
  local s = { dir = dir }
  assert(run("mkdir -p " .. quote(dir .. "/logs") .. " " .. quote(dir .. "/tmp")))
  for _ = 1, 5 do
    local probe = assert(socket.bind("127.0.0.1", 0))
    s.port = select(2, probe:getsockname())
    probe:close()
    local f = assert(io.open(dir .. "/nginx.conf", "wb"))
    f:write(([[
%s
daemon on;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %s/tmp/body;
  proxy_temp_path %s/tmp/proxy;
  fastcgi_temp_path %s/tmp/fastcgi;
  uwsgi_temp_path %s/tmp/uwsgi;
  scgi_temp_path %s/tmp/scgi;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:%d;
    location / {
      default_type application/json;
      return 200 '{"status":"success"}';
    }
  }
}
]]):format(uid:match("^0") and "user root;" or "", dir, dir, dir, dir, dir, dir, dir, s.port))
    f:close()
    ok = run("/usr/sbin/nginx -p " .. quote(dir .. "/") .. " -c " .. quote(dir .. "/nginx.conf")
      .. " -e " .. quote(dir .. "/logs/error.log"))
    if ok then break end
  end
  assert(ok, "the sink did not start")
  s.pid = launch.wait_until(5, function()
    local f = io.open(dir .. "/nginx.pid")
    if not f then return nil end
    local pid = tonumber(f:read("*a"))
    f:close()
    return pid
  end)
  s.url = "http://127.0.0.1:" .. s.port .. "/access/api/v1/analytics"
  function s.stop()
    if s.pid then
      run("kill -TERM " .. s.pid)
      launch.wait_until(5, function() return not launch.alive(s.pid) end)
    end
    run("rm -rf " .. quote(dir))
  end
  return s
end

-- Both workers' dn.stats(), summed (each /_storefront/info answers for one worker).
local function shop_stats(shop)
  local per_worker = {}
  for _ = 1, 200 do
    local info = shop:info()
    if info then per_worker[info.worker_pid] = info.stats end
    local n = 0
    for _ in pairs(per_worker) do n = n + 1 end
    if n >= shop.workers then break end
  end
  local total = {}
  for _, st in pairs(per_worker) do
    for k, v in pairs(st) do total[k] = (total[k] or 0) + v end
  end
  return total
end

local function drained(shop)
  return launch.wait_until(120, function()
    local st = shop_stats(shop)
    return st.queued == 0 and st.in_flight == 0
  end)
end

local function to_ms(value, unit)
  value = tonumber(value)
  if unit == "us" then return value / 1000 end
  if unit == "s" then return value * 1000 end
  if unit == "m" then return value * 60000 end
  return value
end

-- A wrk script that makes each connection wait delay_ms between a response and
-- its next request: a steady, moderate load instead of wrk's flat out.
local paced_script
local function paced(delay_ms)
  if not paced_script then
    paced_script = os.tmpname()
    local f = assert(io.open(paced_script, "wb"))
    f:write(("function delay() return %d end\n"):format(delay_ms))
    f:close()
  end
  return paced_script
end

local function wrk(url, headers, duration, script)
  local cmd = ("wrk -t%d -c%d -d%ds --latency"):format(opts.threads, opts.connections, duration)
  if script then cmd = cmd .. " -s " .. quote(script) end
  for _, h in ipairs(headers or {}) do cmd = cmd .. " -H " .. quote(h) end
  local ok, out = run(cmd .. " " .. quote(url))
  if not ok then error("wrk failed: " .. out) end
  local r = {}
  r.p50 = to_ms(out:match("\n%s+50%%%s+([%d.]+)(%a+)"))
  r.p99 = to_ms(out:match("\n%s+99%%%s+([%d.]+)(%a+)"))
  r.rps = tonumber(out:match("Requests/sec:%s+([%d.]+)"))
  r.requests = tonumber(out:match("(%d+) requests in"))
  r.non_2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
  r.socket_errors = out:match("Socket errors: ([^\n]+)")
  if not (r.p50 and r.p99 and r.rps) then error("cannot read wrk's output:\n" .. out) end
  return r
end

local function median(list)
  local t = {}
  for k, v in ipairs(list) do t[k] = v end
  table.sort(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

local collector, sink, shop_c, shop_s
local function cleanup()
  for _, x in ipairs({ shop_c, shop_s }) do pcall(x.stop, x) end
  if sink then pcall(sink.stop) end
  if collector then pcall(collector.stop, collector) end
end

local ok, err = pcall(function()
  collector = collector_lib.start({ workers = 2 })
  sink = start_sink()
  shop_c = launch.start({ endpoint = collector.url, workers = 2 })
  shop_s = launch.start({ endpoint = sink.url, workers = 2 })

  -- A returning visitor: the cookies one first page view gave.
  local _, _, headers = launch.get(shop_c:url("/welcome"), { ["User-Agent"] = "Mozilla/5.0 (bench)" })
  local cookie = {}
  for pair in (headers["set-cookie"] or ""):gmatch("(dn_[%w_]+=[^;]*)") do cookie[#cookie + 1] = pair end
  assert(#cookie == 2, "no id cookies from the storefront")
  local cookie_header = "Cookie: " .. table.concat(cookie, "; ")
  local ua = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) wrk"

  local cases = {
    { name = "no analytics", shop = shop_c, path = "/no-analytics/products/trail-runner-3", headers = { ua } },
    { name = "analytics, new visitor each request", shop = shop_c, path = "/products/trail-runner-3",
      headers = { ua }, analytics = true },
    { name = "analytics, returning visitor", shop = shop_c, path = "/products/trail-runner-3",
      headers = { ua, cookie_header }, analytics = true },
    { name = "analytics, new visitor, null sink", shop = shop_s, path = "/products/trail-runner-3",
      headers = { ua }, analytics = true },
  }

  local ncpu = tonumber((select(2, run("nproc")):match("%d+"))) or 0
  io.write(("wrk -t%d -c%d -d%ds --latency, median of %d round(s); storefront: 2 workers;"
    .. " collector, sink, storefront and wrk share %d CPUs\n"):format(
    opts.threads, opts.connections, opts.duration, opts.rounds, ncpu))
  -- Warm-up: JIT, connections to the collector, page cache.
  for _, c in ipairs(cases) do wrk(c.shop:url(c.path), c.headers, 1) end
  for _, s in ipairs({ shop_c, shop_s }) do drained(s) end

  local loads = {
    { name = "flat out (each connection sends its next request at once)" },
    { name = ("paced (each connection waits %d ms between requests, about %d req/s)"):format(
      opts.pace, math.floor(opts.connections * 1000 / opts.pace)), script = paced(opts.pace) },
  }
  for _, load in ipairs(loads) do
    load.results = {}
    for k, c in ipairs(cases) do
      load.results[k] = { runs = {}, sent = 0, dropped = 0, failed = 0 }
    end
  end

  for round = 1, opts.rounds do
    for _, load in ipairs(loads) do
      for k, c in ipairs(cases) do
        local res = load.results[k]
        local before = c.analytics and shop_stats(c.shop)
        local r = wrk(c.shop:url(c.path), c.headers, opts.duration, load.script)
        res.runs[#res.runs + 1] = r
        if c.analytics then
          drained(c.shop)
          local after = shop_stats(c.shop)
          res.sent = res.sent + after.sent - before.sent
          res.dropped = res.dropped + after.dropped - before.dropped
          res.failed = res.failed + after.failed - before.failed
        end
        if r.non_2xx > 0 or r.socket_errors then
          io.write(("  round %d, %s: %d non-2xx, socket errors: %s\n"):format(
            round, c.name, r.non_2xx, tostring(r.socket_errors)))
        end
        collector:reset()
      end
    end
  end

  local function stat(res, key)
    local values = {}
    for k, r in ipairs(res.runs) do values[k] = r[key] end
    return median(values)
  end
  for _, load in ipairs(loads) do
    local base = load.results[1]
    local b50, b99 = stat(base, "p50"), stat(base, "p99")
    io.write("\n", load.name, "\n")
    io.write(("| %-36s | %8s | %7s | %7s | %9s | %9s | %-21s |\n"):format(
      "case", "req/s", "p50 ms", "p99 ms", "p50 diff", "p99 diff", "events sent / dropped"))
    io.write("|" .. ("-"):rep(38) .. "|" .. ("-"):rep(9) .. ":|" .. ("-"):rep(8) .. ":|"
      .. ("-"):rep(8) .. ":|" .. ("-"):rep(10) .. ":|" .. ("-"):rep(10) .. ":|" .. ("-"):rep(23) .. "|\n")
    for k, c in ipairs(cases) do
      local res = load.results[k]
      local p50, p99 = stat(res, "p50"), stat(res, "p99")
      local d50 = k == 1 and "" or ("%+.3f"):format(p50 - b50)
      local d99 = k == 1 and "" or ("%+.3f"):format(p99 - b99)
      local events = c.analytics and ("%d / %d"):format(res.sent, res.dropped) or "-"
      io.write(("| %-36s | %8.0f | %7.3f | %7.3f | %9s | %9s | %-21s |\n"):format(
        c.name, stat(res, "rps"), p50, p99, d50, d99, events))
    end
  end
end)
cleanup()
if paced_script then os.remove(paced_script) end
if not ok then
  io.stderr:write(tostring(err) .. "\n")
  os.exit(1)
end
