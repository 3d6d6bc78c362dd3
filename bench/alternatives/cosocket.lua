-- Row 4: an ngx.socket.tcp cosocket loop inside nginx, the OpenResty user's
-- non-blocking alternative. Starts its own nginx (one worker, the Lua module, no
-- dukanext), asks it to send n PUTs over 16 kept-alive cosockets
-- (cosocket_worker.lua) to the collector, and prints the worker's answer.
--   lua5.4 bench/alternatives/cosocket.lua --url URL --body-template FILE [--n 20000]
--     [--seq 1] [--connections 16]
-- Prints one JSON line: events_per_s, cpu_us_per_event (the nginx worker's CPU).
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local lib = dofile(here .. "/../lib.lua")
local socket = require("socket")
local http = require("socket.http")
local ltn12 = require("ltn12")

local args = lib.args(arg)
local N = args.n or 20000
local SEQ = args.seq or 1
local CONNECTIONS = args.connections or 16
assert(args.url and args.body_template, "--url and --body-template are required")
local host, port, path = args.url:match("^http://([^:/]+):(%d+)(/.*)$")
assert(host, "--url must be http://host:port/path")

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\""))
  local out = p:read("a")
  p:close()
  local text, rc = out:match("^(.-)__rc=(%d+)%s*$")
  return tonumber(rc) == 0, text or out
end

local _, dir = sh("mktemp -d \"${TMPDIR:-/tmp}/dukanext-cosocket.XXXXXX\"")
dir = dir:gsub("%s+$", "")
local abs_here = select(2, sh("cd " .. quote(here) .. " && pwd")):gsub("%s+$", "")
local template = select(2, sh("readlink -f " .. quote(args.body_template))):gsub("%s+$", "")
local probe = assert(socket.bind("127.0.0.1", 0))
local _, nginx_port = probe:getsockname()
probe:close()
local is_root = select(2, sh("id -u")):match("^0%s*$")
local modules = os.getenv("DN_NGINX_MODULES") or "/usr/lib/nginx/modules"

local conf = ([[
load_module %s/ndk_http_module.so;
load_module %s/ngx_http_lua_module.so;
%s
daemon on;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  lua_package_path "%s/?.lua;;";
  lua_socket_pool_size 64;
  server {
    listen 127.0.0.1:%d;
    location = /run { content_by_lua_block { require("cosocket_worker").run() } }
  }
}
]]):format(modules, modules, is_root and "user root;" or "", dir, dir, dir, dir, dir, dir, dir,
  abs_here, nginx_port)
local f = assert(io.open(dir .. "/nginx.conf", "wb"))
f:write(conf)
f:close()

local nginx = os.getenv("DN_NGINX") or "/usr/sbin/nginx"
local started, out = sh(quote(nginx) .. " -p " .. quote(dir .. "/") .. " -c " .. quote(dir .. "/nginx.conf")
  .. " -e " .. quote(dir .. "/error.log"))
local function stop()
  local pf = io.open(dir .. "/nginx.pid")
  if pf then
    local pid = pf:read("*a"):match("%d+")
    pf:close()
    if pid then
      sh("kill -TERM " .. pid)
      for _ = 1, 250 do
        if not io.open("/proc/" .. pid .. "/stat") then break end
        socket.sleep(0.02)
      end
    end
  end
  sh("rm -rf " .. quote(dir))
end
if not started then
  io.stderr:write("cosocket: nginx did not start:\n", out, "\n")
  stop()
  os.exit(1)
end

local function run(n, seq)
  local chunks = {}
  http.TIMEOUT = 300
  local url = string.format("http://127.0.0.1:%d/run?n=%d&c=%d&seq=%d&host=%s&port=%s&path=%s&template=%s",
    nginx_port, n, CONNECTIONS, seq, host, port, path, template)
  local ok, status
  for _ = 1, 100 do -- the worker may still be starting
    ok, status = http.request({ url = url, sink = ltn12.sink.table(chunks) })
    if ok then break end
    socket.sleep(0.02)
  end
  return status, table.concat(chunks)
end

run(CONNECTIONS, SEQ) -- warm-up: the connections and the worker's code
local status, body = run(N, SEQ + CONNECTIONS + 1)
local errors = io.open(dir .. "/error.log")
local log = errors and errors:read("*a") or ""
if errors then errors:close() end
stop()
local result = status == 200 and body:match("^{.-}")
if not result then
  io.stderr:write("cosocket: ", tostring(status), " ", body, "\n", log, "\n")
  os.exit(1)
end
io.stdout:write(result, "\n")
local decoded = lib.cjson.decode(result)
if decoded.sent ~= N then io.stderr:write(log, "\n") os.exit(1) end
