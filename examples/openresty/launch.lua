-- Starts the example storefront (examples/openresty/nginx.conf) in a temp folder
-- on 127.0.0.1 and a free port, and controls it: used by run.lua, the spec
-- (spec/90-openresty_spec.lua) and bench/openresty_latency.lua.
--
--   local launch = dofile("examples/openresty/launch.lua")
--   local shop = launch.start({ endpoint = collector.url, workers = 2 })
--   shop:url("/products/1"); shop:reload(); shop:quit(); shop:stop()
--
-- Pure Lua with LuaSocket (any Lua from 5.1); nginx runs the LuaJIT build of the
-- module, found at $DUKANEXT_LUAJIT_CPATH or <repo>/build/lua-luajit/?.so.
local socket = require("socket")
local http = require("socket.http")
local ltn12 = require("ltn12")

local M = {}

M.NGINX = os.getenv("DN_NGINX") or "/usr/sbin/nginx"
M.MODULES_DIR = os.getenv("DN_NGINX_MODULES") or "/usr/lib/nginx/modules"

local Shop = {}
Shop.__index = Shop

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- ok, output (stdout and stderr), exit code; the code is echoed because
-- io.popen():close() reports nothing on 5.1.
local function run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local text, rc = out:match("^(.-)__rc=(%d+)%s*$")
  rc = tonumber(rc) or -1
  return rc == 0, text or out, rc
end
M.run = run

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
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

local function wait_until(timeout, fn)
  local deadline = socket.gettime() + timeout
  repeat
    local v = fn()
    if v then return v end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return fn()
end
M.wait_until = wait_until

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local _, cwd = run("pwd")
  return trim(cwd) .. "/" .. path:gsub("^%./", "")
end

local HERE = absolute(debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")
M.EXAMPLE_DIR = HERE
M.REPO = HERE:gsub("/examples/openresty$", "")

function M.luajit_cpath()
  local explicit = os.getenv("DUKANEXT_LUAJIT_CPATH")
  if explicit and explicit ~= "" then return explicit end
  return M.REPO .. "/build/lua-luajit/?.so"
end

-- A pid whose /proc entry is gone or a zombie has exited for our purposes.
local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end
M.alive = alive

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- GET with LuaSocket; status (or nil, error), body, headers.
function M.get(url, headers, timeout)
  local chunks = {}
  local saved = http.TIMEOUT
  http.TIMEOUT = timeout or 5
  local ok, res, status, resp_headers = pcall(http.request, {
    url = url, method = "GET", headers = headers, sink = ltn12.sink.table(chunks),
  })
  http.TIMEOUT = saved
  if not ok then return nil, tostring(res) end
  if not res then return nil, tostring(status) end
  return status, table.concat(chunks), resp_headers
end

local function render(template, vars)
  return (template:gsub("{{([%w_]+)}}", function(name)
    local value = vars[name]
    if value == nil then error("storefront: template variable " .. name .. " is not set", 0) end
    return tostring(value)
  end))
end

function Shop:_nginx(args)
  return run(quote(M.NGINX) .. " -p " .. quote(self.prefix .. "/") .. " -c " .. quote(self.conf)
    .. " -e " .. quote(self.error_log) .. (args or ""))
end

function Shop:url(path)
  return self.base .. (path or "/")
end

function Shop:error_log_text()
  return read_file(self.error_log) or ""
end

function Shop:master_pid()
  return tonumber(read_file(self.pid_file) or "")
end

-- The master's children: the workers, old ones still draining included.
function Shop:worker_pids()
  local pids = {}
  local master = self.pid
  if not master then return pids end
  local _, out = run("ps -o pid= --ppid " .. master)
  for pid in out:gmatch("%d+") do
    if alive(tonumber(pid)) then pids[#pids + 1] = tonumber(pid) end
  end
  table.sort(pids)
  return pids
end

function Shop:info()
  local status, body = M.get(self:url("/_storefront/info"), nil, 2)
  if status ~= 200 then return nil, body end
  return require("cjson").decode(body)
end

-- Access log records: { id =, status =, uri =, pid = }.
function Shop:access_log()
  local records = {}
  for line in (read_file(self.access_log_file) or ""):gmatch("([^\n]*)\n") do
    local id, status, uri, pid = line:match("^(%S+) (%d+) (%S+) (%d+)$")
    if id then
      records[#records + 1] = { id = id, status = tonumber(status), uri = uri, pid = tonumber(pid) }
    end
  end
  return records
end

function Shop:_launch()
  -- nginx resolves a relative path against its own working folder: make it absolute.
  local cpath = absolute(self.cpath)
  local so = cpath:gsub("%?", "dukanext")
  if not read_file(so) then
    error("storefront: " .. so .. " is missing: build the LuaJIT module first ("
      .. "cmake -S . -B build -DDUKANEXT_ALL_LUAS=ON && cmake --build build), or set "
      .. "DUKANEXT_LUAJIT_CPATH", 0)
  end
  assert(run("mkdir -p " .. quote(self.prefix .. "/logs") .. " " .. quote(self.prefix .. "/tmp")))
  local template = self.template or assert(read_file(M.EXAMPLE_DIR .. "/nginx.conf"))
  local started, output
  -- The free port may be taken between probing and nginx's bind: retry.
  for _ = 1, 5 do
    self.port = self.fixed_port or free_port()
    self.base = "http://127.0.0.1:" .. self.port
    write_file(self.conf, render(template, {
      modules_dir = M.MODULES_DIR,
      user = self.root and "user root;" or "",
      workers = self.workers,
      prefix = self.prefix,
      repo = M.REPO,
      cpath = cpath,
      -- reuseport: the kernel spreads connections over the workers.
      listen = "127.0.0.1:" .. self.port .. (self.workers > 1 and " reuseport" or ""),
      endpoint = self.endpoint,
      session_timeout = self.session_timeout,
      cookie_secure = tostring(self.cookie_secure),
    }))
    started, output = self:_nginx()
    if started or self.fixed_port
      or not self:error_log_text():find("Address already in use", 1, true) then
      break
    end
  end
  if not started then
    error("storefront: nginx failed to start:\n" .. output .. "\n" .. self:error_log_text(), 0)
  end
  self.pid = wait_until(5, function() return self:master_pid() end)
  if not self.pid then error("storefront: no pid file:\n" .. self:error_log_text(), 0) end
  local function ready()
    if self.ready_path then return M.get(self:url(self.ready_path), nil, 2) end
    return self:info()
  end
  if not wait_until(5, ready) then
    error("storefront: nginx did not answer at " .. self.base .. ":\n" .. self:error_log_text(), 0)
  end
end

-- opts: endpoint (required), workers (2), session_timeout (1800),
-- cookie_secure (true), port (a free one), cpath (M.luajit_cpath()), keep
-- (leave the folder); template (a configuration with the same placeholders instead
-- of the example's) and ready_path (answered once it serves; default
-- /_storefront/info, which must answer 200).
function M.start(opts)
  assert(opts and opts.endpoint, "storefront: endpoint is required")
  local ok, out = run("mktemp -d \"${TMPDIR:-/tmp}/dukanext-storefront.XXXXXX\"")
  if not ok then error("storefront: mktemp failed: " .. out, 0) end
  local prefix = trim(out)
  local _, uid = run("id -u")
  local self = setmetatable({
    prefix = prefix,
    conf = prefix .. "/nginx.conf",
    error_log = prefix .. "/logs/error.log",
    access_log_file = prefix .. "/logs/access.log",
    pid_file = prefix .. "/nginx.pid",
    endpoint = opts.endpoint,
    workers = opts.workers or 2,
    session_timeout = opts.session_timeout or 1800,
    cookie_secure = opts.cookie_secure ~= false,
    fixed_port = opts.port,
    cpath = opts.cpath or M.luajit_cpath(),
    template = opts.template,
    ready_path = opts.ready_path,
    -- As root, nginx would run workers as "nobody", who can't write the 0700 folder.
    root = trim(uid) == "0",
    keep = opts.keep or os.getenv("DN_KEEP_STOREFRONT") ~= nil,
  }, Shop)
  local launched, err = pcall(self._launch, self)
  if not launched then
    self:stop()
    error(err, 2)
  end
  return self
end

-- nginx -s reload; answers once workers other than the old ones serve requests,
-- with the set of the old workers' pids (they may still answer for a moment).
function Shop:reload()
  local old = {}
  for _, pid in ipairs(self:worker_pids()) do old[pid] = true end
  local ok, out = self:_nginx(" -s reload")
  if not ok then error("storefront: reload failed: " .. out .. "\n" .. self:error_log_text(), 0) end
  local served = wait_until(5, function()
    local info = self:info()
    return info and not old[info.worker_pid]
  end)
  if not served then error("storefront: reload did not take effect:\n" .. self:error_log_text(), 0) end
  return old
end

-- nginx -s quit, then waits until the master (so every worker, which flush on
-- their way out) has exited. Answers true when it did within timeout.
function Shop:quit(timeout)
  if not self.pid or not alive(self.pid) then return true end
  self:_nginx(" -s quit")
  return wait_until(timeout or 15, function() return not alive(self.pid) end) and true or false
end

-- nginx -s stop (fast shutdown: the master kills workers still running after
-- about 1.5 s), then waits until the master has exited.
function Shop:fast_stop(timeout)
  if not self.pid or not alive(self.pid) then return true end
  self:_nginx(" -s stop")
  return wait_until(timeout or 15, function() return not alive(self.pid) end) and true or false
end

-- Stops nginx (TERM, then KILL) and removes its folder.
function Shop:stop()
  if self.stopped then return end
  self.stopped = true
  local pid = self.pid or self:master_pid()
  if pid and alive(pid) then
    run("kill -TERM " .. pid)
    if not wait_until(5, function() return not alive(pid) end) then
      run("kill -KILL -- -" .. pid .. " || kill -KILL " .. pid)
      wait_until(1, function() return not alive(pid) end)
    end
  end
  if self.keep then
    io.stderr:write("storefront: kept " .. self.prefix .. "\n")
  elseif self.prefix:find("dukanext%-storefront") then
    run("rm -rf " .. quote(self.prefix))
  end
end

return M
