-- Runs inside nginx (LuaJIT + lua-nginx-module), loaded by cosocket.lua's nginx.conf:
-- GET /run?n=&c=&seq=&host=&port=&path=&template= sends n PUTs to host:port with the
-- body and headers of dukanext's, over c light threads (ngx.thread), each with one
-- ngx.socket.tcp connection kept alive: the way an OpenResty user sends events by hand
-- today, non-blocking inside the worker. Answers one JSON line: events_per_s,
-- cpu_us_per_event (the worker's CPU, CLOCK_PROCESS_CPUTIME_ID), sent, failed.
local ffi = require("ffi")

pcall(ffi.cdef, [[
  typedef struct { long tv_sec; long tv_nsec; } dn_bench_timespec;
  int clock_gettime(int clock_id, dn_bench_timespec *ts);
]])
local CLOCK_PROCESS_CPUTIME_ID = 2
local ts = ffi.new("dn_bench_timespec")
local function cpu()
  ffi.C.clock_gettime(CLOCK_PROCESS_CPUTIME_ID, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local M = {}

local function read_template(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n?$")
end

function M.run()
  local a = ngx.req.get_uri_args()
  local n, conc, seq = tonumber(a.n), tonumber(a.c), tonumber(a.seq)
  local host, port, path = a.host, tonumber(a.port), a.path
  local prefix, suffix, ua = read_template(a.template)
  local head = "PUT " .. path .. " HTTP/1.1\r\nHost: " .. host .. ":" .. port .. "\r\nUser-Agent: "
    .. ua .. "\r\nAccept: */*\r\nContent-Type: application/json\r\nX-Dukanext-Attempt: 1\r\n"
  local next_i, sent, failed = 0, 0, 0

  local function sender()
    local sock = ngx.socket.tcp()
    sock:settimeout(10000)
    local ok, err = sock:connect(host, port)
    if not ok then
      ngx.log(ngx.ERR, "cosocket bench: connect: ", err)
      return
    end
    while next_i < n do
      local i = seq + next_i
      next_i = next_i + 1
      local body = prefix .. i .. suffix
      local bytes, send_err = sock:send({ head, "Idempotency-Key: ",
        string.format("00000000-0000-4000-8000-%012d", i), "\r\nContent-Length: ", #body,
        "\r\n\r\n", body })
      local status_line = bytes and sock:receive("*l")
      local status = status_line and tonumber(status_line:match("^HTTP/1%.%d (%d+)"))
      local length, chunked = 0, false
      while status do
        local line = sock:receive("*l")
        if not line then status = nil break end
        if line == "" then break end
        local v = line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
        if v then length = tonumber(v) end
        if line:lower():match("^transfer%-encoding:.*chunked") then chunked = true end
      end
      if status and chunked then
        -- nginx chunks an answer printed by Lua: read chunks up to the empty one.
        repeat
          local size = tonumber((sock:receive("*l") or ""):match("^%x+") or "", 16)
          if not size or (size > 0 and not sock:receive(size)) or not sock:receive("*l") then
            status = nil
          end
        until not status or size == 0
      elseif status and length > 0 and not sock:receive(length) then
        status = nil
      end
      if status == 200 then
        sent = sent + 1
      else
        failed = failed + 1
        if not status then
          ngx.log(ngx.ERR, "cosocket bench: ", send_err or "no answer")
          return
        end
      end
    end
    sock:setkeepalive()
  end

  ngx.update_time()
  local w0, c0 = ngx.now(), cpu()
  local threads = {}
  for t = 1, conc do threads[t] = ngx.thread.spawn(sender) end
  for t = 1, conc do ngx.thread.wait(threads[t]) end
  ngx.update_time()
  local w1, c1 = ngx.now(), cpu()
  ngx.say(string.format('{"events_per_s":%.1f,"cpu_us_per_event":%.3f,"wall_s":%.4f,"sent":%d,'
    .. '"failed":%d,"n":%d}', sent / (w1 - w0), (c1 - c0) / n * 1e6, w1 - w0, sent, failed, n))
end

return M
