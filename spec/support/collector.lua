-- Test helper: runs a real analytics collector (nginx + lua-nginx-module) on
-- 127.0.0.1 and lets specs script its behaviour and read what it received.
-- Pure Lua, compatible with Lua 5.1-5.4 and LuaJIT.
local socket = require("socket")
local http = require("socket.http")
local ltn12 = require("ltn12")
local cjson = require("cjson")

local M = {}

M.NGINX = os.getenv("DN_NGINX") or "/usr/sbin/nginx"
M.MODULES_DIR = os.getenv("DN_NGINX_MODULES") or "/usr/lib/nginx/modules"
M.API_PATH = "/access/api/v1/analytics"

local START_TIMEOUT = 5
local STOP_TIMEOUT = 5
local POLL_INTERVAL = 0.02

local Collector = {}
Collector.__index = Collector

-- Shell helpers --------------------------------------------------------------

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns ok, output (stdout+stderr), exit code.
-- The exit code is echoed because io.popen():close() reports nothing in 5.1.
local function run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local text, rc = out:match("^(.-)__rc=(%d+)%s*$")
  rc = tonumber(rc) or -1
  return rc == 0, text or out, rc
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  f:close()
end

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local _, cwd = run("pwd")
  return trim(cwd) .. "/" .. path:gsub("^%./", "")
end

local function this_dir()
  local source = debug.getinfo(1, "S").source
  local dir = source:match("^@(.*)/[^/]*$") or "."
  return absolute(dir)
end

local SUPPORT_DIR = this_dir()
local COLLECTOR_DIR = SUPPORT_DIR .. "/collector"

-- A finalizer that works on every Lua version: 5.1/LuaJIT only run __gc for
-- userdata, 5.2+ for tables.
local function gc_guard(fn)
  if newproxy then
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = fn
    return proxy
  end
  return setmetatable({}, { __gc = fn })
end

local function process_alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if stat then
    -- A zombie is gone for our purposes (nobody may be reaping it).
    return stat:match("^%d+ %b() (%a)") ~= "Z"
  end
  if read_file("/proc/self/stat") then return false end
  return (run("kill -0 " .. pid))
end

local function wait_until(timeout, fn)
  local deadline = socket.gettime() + timeout
  repeat
    local result = fn()
    if result then return result end
    socket.sleep(POLL_INTERVAL)
  until socket.gettime() > deadline
  return fn()
end

-- HTTP ---------------------------------------------------------------------

-- Plain HTTP/1.1 request with LuaSocket. Returns status (or nil, error), body,
-- headers.
local function request(method, url, body, headers, timeout)
  local chunks = {}
  headers = headers or {}
  if body then
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
    headers["Content-Length"] = tostring(#body)
  end
  -- socket.http applies http.TIMEOUT to every socket it opens.
  local saved = http.TIMEOUT
  http.TIMEOUT = timeout or 5
  local ok, res, status, resp_headers = pcall(http.request, {
    url = url,
    method = method,
    headers = headers,
    source = body and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(chunks),
  })
  http.TIMEOUT = saved
  if not ok then return nil, tostring(res) end
  if not res then return nil, tostring(status) end
  return status, table.concat(chunks), resp_headers
end
M.request = request

-- Ports, certificates, config ------------------------------------------------

-- Returns n distinct free ports (all bound at once so they differ).
local function free_ports(n)
  local sockets, ports = {}, {}
  for i = 1, n do
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    sockets[i], ports[i] = s, tonumber(port)
  end
  for _, s in ipairs(sockets) do s:close() end
  return ports
end

function M.free_port()
  return free_ports(1)[1]
end

local OPENSSL_CNF = [[
[req]
distinguished_name = dn
prompt = no
[dn]
CN = dukanext collector test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
]]

-- Self-signed CA plus a leaf for 127.0.0.1/localhost signed by it.
local function make_certs(dir)
  local tls = dir .. "/tls"
  local cnf = tls .. "/openssl.cnf"
  assert(run("mkdir -p " .. quote(tls)))
  write_file(cnf, OPENSSL_CNF)
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local steps = {
    "openssl req -x509 " .. ec .. " -days 2 -config " .. quote(cnf) .. " -extensions v3_ca"
      .. " -keyout " .. quote(tls .. "/ca.key") .. " -out " .. quote(tls .. "/ca.pem"),
    "openssl req -new " .. ec .. " -config " .. quote(cnf) .. " -subj /CN=localhost"
      .. " -keyout " .. quote(tls .. "/server.key") .. " -out " .. quote(tls .. "/server.csr"),
    "openssl x509 -req -days 2 -in " .. quote(tls .. "/server.csr")
      .. " -CA " .. quote(tls .. "/ca.pem") .. " -CAkey " .. quote(tls .. "/ca.key")
      .. " -set_serial " .. os.time() .. " -extfile " .. quote(cnf) .. " -extensions v3_leaf"
      .. " -out " .. quote(tls .. "/server.pem"),
  }
  for _, cmd in ipairs(steps) do
    local ok, out = run(cmd)
    if not ok then error("collector: openssl failed: " .. cmd .. "\n" .. out, 0) end
  end
  return tls .. "/ca.pem", tls .. "/server.pem", tls .. "/server.key"
end

local function render(template, vars)
  return (template:gsub("{{([%w_]+)}}", function(name)
    local value = vars[name]
    if value == nil then error("collector: template variable " .. name .. " is not set", 0) end
    return tostring(value)
  end))
end

function Collector:_write_conf()
  local h2 = self.http2 and " http2" or ""
  -- Without reuseport one worker tends to accept every connection; with it
  -- the kernel spreads them, so several workers really share the plan.
  local reuse = self.workers > 1 and " reuseport" or ""
  -- http2 = "tls": HTTP/2 on the TLS listener only, the plain one keeps HTTP/1.1.
  local plain_h2 = self.http2 == "tls" and "" or h2
  local listen = { "    listen 127.0.0.1:" .. self.port .. plain_h2 .. reuse .. ";" }
  if self.control_port ~= self.port then
    -- nginx 1.22 speaks only h2c on a plain "http2" listener, so the control
    -- calls (HTTP/1.1 from LuaSocket) get a listener of their own.
    listen[#listen + 1] = "    listen 127.0.0.1:" .. self.control_port .. ";"
  end
  local ssl = ""
  if self.tls then
    listen[#listen + 1] = "    listen 127.0.0.1:" .. self.tls_port .. " ssl" .. h2 .. reuse .. ";"
    -- A session cache, as deployed servers keep: libcurl resumes TLS 1.2 sessions by
    -- id (it turns session tickets off), which nginx's default (none) never resumes.
    ssl = "    ssl_certificate " .. self.cert_file .. ";\n"
      .. "    ssl_certificate_key " .. self.key_file .. ";\n"
      .. "    ssl_session_cache shared:collector_tls:1m;\n"
  end
  local template = assert(read_file(COLLECTOR_DIR .. "/nginx.conf.in"))
  write_file(self.conf, render(template, {
    modules_dir = M.MODULES_DIR,
    -- As root, nginx would run workers as "nobody", who can't write the 0700 temp dir.
    user = self.root and "user root;" or "",
    workers = self.workers,
    prefix = self.dir,
    lua_dir = COLLECTOR_DIR,
    listen = table.concat(listen, "\n"),
    ssl = ssl,
    generation = self.generation,
    dedupe = self.dedupe and "on" or "off",
    analytics_handler = self.bench and (self.delay and "analytics_wan" or "analytics_bench")
      or "analytics",
    bench_delay = self.delay or 0,
    -- nginx closes a kept-alive connection after 1000 requests by default; a
    -- benchmark would then measure reconnects as much as requests.
    bench_http = self.bench and "  keepalive_requests 100000000;" or "",
    keepalive_timeout = self.keepalive_timeout,
  }))
end

-- Lifecycle ------------------------------------------------------------------

function Collector:_nginx(args)
  return run(quote(M.NGINX) .. " -p " .. quote(self.dir .. "/") .. " -c " .. quote(self.conf)
    .. " -e " .. quote(self.error_log) .. (args or ""))
end

function Collector:error_log_text()
  return read_file(self.error_log) or ""
end

function Collector:_health()
  local status, body, headers = request("GET", self.control_base .. "/_collector/health", nil, nil, 1)
  if status == 200 and body == "ok" then
    return tonumber(headers["x-collector-generation"]) or true
  end
end

function Collector:_assign_ports(fixed)
  local ports = free_ports(3)
  self.port = fixed or ports[1]
  self.control_port = self.http2 == true and ports[2] or self.port
  self.tls_port = self.tls and ports[3] or nil
  self.base = "http://127.0.0.1:" .. self.port
  self.url = self.base .. M.API_PATH
  self.control_base = "http://127.0.0.1:" .. self.control_port
  if self.tls then
    self.tls_base = "https://127.0.0.1:" .. self.tls_port
    self.tls_url = self.tls_base .. M.API_PATH
  end
end

-- Everything after the temp dir exists; errors leave no nginx and no dir behind.
function Collector:_launch(opts)
  assert(run("mkdir -p " .. quote(self.dir .. "/logs") .. " " .. quote(self.dir .. "/tmp")))
  write_file(self.events_file, "")
  write_file(self.requests_file, "")
  write_file(self.arrivals_file, "")
  if self.tls then
    self.ca_file, self.cert_file, self.key_file = make_certs(self.dir)
  end

  -- The free port may be taken between probing and nginx's bind: retry.
  local started, output
  for _ = 1, 5 do
    self:_assign_ports(opts.port)
    self:_write_conf()
    started, output = self:_nginx()
    if started or opts.port or not self:error_log_text():find("Address already in use", 1, true) then
      break
    end
  end
  if not started then
    error("collector: nginx failed to start:\n" .. output .. "\n" .. self:error_log_text(), 0)
  end

  self.pid = tonumber(wait_until(START_TIMEOUT, function() return read_file(self.pid_file) end))
  -- Stops nginx if the spec forgets to; runs at GC or when the Lua state closes.
  self._guard = gc_guard(function() pcall(Collector.stop, self) end)
  if not wait_until(START_TIMEOUT, function() return self:_health() end) then
    error("collector: nginx did not become healthy at " .. self.control_base .. ":\n"
      .. self:error_log_text(), 0)
  end
end

function M.start(opts)
  opts = opts or {}
  local ok, out = run("mktemp -d \"${TMPDIR:-/tmp}/dukanext-collector.XXXXXX\"")
  if not ok then error("collector: mktemp failed: " .. out, 0) end
  local dir = trim(out)
  local _, uid = run("id -u")

  local self = setmetatable({
    dir = dir,
    conf = dir .. "/nginx.conf",
    error_log = dir .. "/logs/error.log",
    pid_file = dir .. "/nginx.pid",
    events_file = dir .. "/events.jsonl",
    requests_file = dir .. "/requests.jsonl",
    arrivals_file = dir .. "/arrivals.jsonl",
    workers = opts.workers or 1,
    tls = opts.tls and true or false,
    http2 = opts.http2 == "tls" and "tls" or (opts.http2 and true or false),
    -- bench/: the analytics location validates and accepts, and logs the event, but
    -- keeps no request log, plan or dedupe (requests() stays empty).
    bench = opts.bench and true or false,
    -- The real service answers a byte-identical copy of an event it has seen with
    -- success and keeps one. Off by default: every copy a client sends then reaches
    -- events.jsonl, so that duplicates show. On: copies answer 200 with action
    -- "duplicate" in requests.jsonl and stay out of events.jsonl.
    dedupe = opts.dedupe and true or false,
    -- bench/ with a round trip: each answer waits this many seconds, and the
    -- collector counts the connections and TLS resumptions it sees (connections()).
    delay = opts.bench and opts.delay or nil,
    -- How long nginx keeps an idle connection open: "30s", or "200ms" for a spec that
    -- needs the server to close connections sitting in the client's pool.
    keepalive_timeout = opts.keepalive_timeout or "30s",
    root = trim(uid) == "0",
    generation = 1,
    keep = opts.keep,
  }, Collector)
  if self.keep == nil then
    self.keep = os.getenv("DN_KEEP_COLLECTOR") ~= nil
  end
  local launched, err = pcall(self._launch, self, opts)
  if not launched then
    self:stop()
    error(err, 2)
  end
  return self
end

function Collector:stop()
  if self.stopped then return end
  self.stopped = true
  local pid = self.pid or tonumber(read_file(self.pid_file) or "")
  if pid then
    -- TERM, not QUIT: a graceful quit would wait for planned delays to end.
    run("kill -TERM " .. pid)
    if not wait_until(STOP_TIMEOUT, function() return not process_alive(pid) end) then
      -- nginx's master calls setsid(), so its pid is the group of its workers.
      run("kill -KILL -- -" .. pid .. " || kill -KILL " .. pid)
      wait_until(1, function() return not process_alive(pid) end)
    end
  end
  if self.keep then
    io.stderr:write("collector: kept " .. self.dir .. "\n")
  else
    run("rm -rf " .. quote(self.dir))
  end
end

-- Re-reads the config (regenerated, so template edits apply) and waits until
-- the new workers answer.
function Collector:reload()
  assert(not self.stopped, "collector: reload after stop")
  self.generation = self.generation + 1
  self:_write_conf()
  local ok, out = self:_nginx(" -s reload")
  if not ok then error("collector: reload failed: " .. out .. "\n" .. self:error_log_text(), 0) end
  local generation = self.generation
  if not wait_until(START_TIMEOUT, function() return self:_health() == generation end) then
    error("collector: reload did not take effect:\n" .. self:error_log_text(), 0)
  end
end

-- Control --------------------------------------------------------------------

function Collector:_control(method, path, body)
  local status, resp = request(method, self.control_base .. path, body)
  if status ~= 200 then
    error("collector: " .. method .. " " .. path .. " failed: " .. tostring(status) .. " " .. tostring(resp), 2)
  end
  return resp
end

-- Replaces the plan. actions: list of action tables consumed one per request;
-- default: sticky action used once the list is exhausted (nil = normal).
function Collector:plan(actions, default)
  local payload = { actions = actions or {} }
  if next(payload.actions) == nil then
    payload.actions = nil -- cjson would encode {} as an object
  end
  payload.default = default
  self:_control("PUT", "/_collector/plan", cjson.encode(payload))
end

-- What a collector started with bench = true and a delay saw: {connections = n,
-- tls = n, tls_resumed = n}, counted over every worker since the last reset.
function Collector:connections()
  return cjson.decode(self:_control("GET", "/_collector/connections"))
end

function Collector:reset()
  self:_control("POST", "/_collector/reset", "")
end

-- Reading the logs -----------------------------------------------------------

-- Complete lines only: a line is visible once its single write(2) is done.
function Collector:_lines(path)
  local lines = {}
  for line in (read_file(path) or ""):gmatch("([^\n]*)\n") do
    if line ~= "" then lines[#lines + 1] = line end
  end
  return lines
end

function Collector:event_lines()
  return self:_lines(self.events_file)
end

function Collector:request_lines()
  return self:_lines(self.requests_file)
end

-- cjson gives floats on Lua 5.3+; make the counters read as integers.
local to_integer = math.tointeger or function(x) return x end

-- Requests to the analytics location as they arrive, before a planned delay:
-- { seq, time, idempotency_key }, seq shared with requests().
function Collector:arrivals()
  local list = {}
  for i, line in ipairs(self:_lines(self.arrivals_file)) do
    local rec = cjson.decode(line)
    rec.seq = to_integer(rec.seq) or rec.seq
    list[i] = rec
  end
  return list
end

function Collector:events()
  local events = {}
  for i, line in ipairs(self:event_lines()) do
    events[i] = cjson.decode(line)
  end
  return events
end

function Collector:requests()
  local records = {}
  for i, line in ipairs(self:request_lines()) do
    local rec = cjson.decode(line)
    for _, key in ipairs({ "seq", "status", "worker", "connection" }) do
      if type(rec[key]) == "number" then rec[key] = to_integer(rec[key]) or rec[key] end
    end
    records[i] = rec
  end
  return records
end

-- "Delivered once" as a client promises it, whatever the service drops: over every
-- request logged, how many 2xx answers each Idempotency-Key got. Answers the counts by
-- key, and the keys answered more than once, sorted.
function Collector:answers_by_key()
  local counts, doubled = {}, {}
  for _, rec in ipairs(self:requests()) do
    local key = rec.headers.idempotency_key
    if type(key) == "string" and rec.status >= 200 and rec.status < 300 then
      counts[key] = (counts[key] or 0) + 1
      if counts[key] == 2 then doubled[#doubled + 1] = key end
    end
  end
  table.sort(doubled)
  return counts, doubled
end

local function wait_for(reader, n, timeout)
  local list
  wait_until(timeout or 5, function()
    list = reader()
    return #list >= n
  end)
  return list
end

function Collector:wait_events(n, timeout)
  return wait_for(function() return self:events() end, n, timeout)
end

function Collector:wait_requests(n, timeout)
  return wait_for(function() return self:requests() end, n, timeout)
end

function Collector:wait_arrivals(n, timeout)
  return wait_for(function() return self:arrivals() end, n, timeout)
end

local function all_answered(self)
  local answered = {}
  for _, rec in ipairs(self:requests()) do answered[rec.seq] = true end
  for _, a in ipairs(self:arrivals()) do
    if not answered[a.seq] then return false end
  end
  return true
end

-- Waits until every request that arrived has been answered (and logged): nothing is
-- held by a planned delay any more. Answers true, or false at the timeout.
function Collector:wait_idle(timeout)
  return wait_until(timeout or 5, function() return all_answered(self) end) and true or false
end

-- Waits until the collector is idle and no request arrived for `quiet` seconds: for a
-- spec whose client cancelled a request it may already have written, which the server
-- then reads a moment later. Answers true, or false at the timeout.
function Collector:wait_quiet(quiet, timeout)
  local count, since = -1, socket.gettime()
  return wait_until(timeout or 5, function()
    local n = #self:arrivals()
    if n ~= count then count, since = n, socket.gettime() end
    return socket.gettime() - since >= quiet and all_answered(self)
  end) and true or false
end

return M
