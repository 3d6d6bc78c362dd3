-- Shared by the measurement scripts of bench/: arguments, clocks, statistics and the
-- one JSON line each script prints for bench/run. Plain Lua 5.1-5.4 (lua-curl's
-- script runs on 5.1).
local M = {}

local socket = require("socket")
local cjson = require("cjson")

M.cjson = cjson
M.wall = socket.gettime
M.sleep = socket.sleep
-- CPU time of the whole process (every thread), in seconds: clock(3) is
-- CLOCK_PROCESS_CPUTIME_ID on glibc, so it has nanosecond resolution.
M.cpu = os.clock

-- The folder of bench/ (this file's), absolute or relative to the current directory.
M.BENCH_DIR = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")

-- Puts the module under test first on package.cpath: DUKANEXT_CPATH (ctest style,
-- "./build/?.so") or build/ beside bench/.
function M.use_module_build()
  local cpath = os.getenv("DUKANEXT_CPATH") or (M.BENCH_DIR .. "/../build/?.so")
  package.cpath = cpath .. ";" .. package.cpath
end

-- "--name value" and "--flag" arguments into a table; numbers become numbers.
function M.args(argv)
  local out = {}
  local i = 1
  while argv[i] do
    local name = argv[i]:match("^%-%-([%w_%-]+)$")
    if not name then error("bench: unexpected argument " .. argv[i], 0) end
    name = name:gsub("%-", "_")
    local value = argv[i + 1]
    if value == nil or value:match("^%-%-") then
      out[name] = true
      i = i + 1
    else
      out[name] = tonumber(value) or value
      i = i + 2
    end
  end
  return out
end

function M.median(list)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) / 2] end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

-- (max - min) / median: how far apart the repetitions of one figure were.
function M.spread(list)
  local med = M.median(list)
  if not med or med == 0 then return 0 end
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(list) do
    if v < lo then lo = v end
    if v > hi then hi = v end
  end
  return (hi - lo) / med
end

-- The result of a script: one JSON object on one line of stdout, read by bench/run.
function M.emit_result(t)
  io.stdout:write(cjson.encode(t), "\n")
  io.stdout:flush()
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

-- Resident set size of this process in bytes (VmRSS of /proc/self/status).
function M.rss()
  local status = M.read_file("/proc/self/status") or ""
  local kb = status:match("VmRSS:%s*(%d+)%s*kB")
  return kb and tonumber(kb) * 1024 or nil
end

-- The request every contender sends: the body bytes dukanext itself sent, read back by
-- bench/run from the collector, with the metadata counter cut out, and dukanext's
-- User-Agent. prefix .. n .. suffix is the body of request n, so no two requests carry
-- the same bytes (the collector drops byte-identical duplicates, which would make its
-- work lighter). The file has three lines: prefix, suffix, user agent.
function M.body_template(args)
  local path = args.body_template or os.getenv("BENCH_BODY_TEMPLATE")
  local text = assert(path and M.read_file(path), "bench: --body-template FILE is required")
  local prefix, suffix, user_agent = text:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n?$")
  assert(prefix, "bench: " .. path .. " is not a body template")
  return prefix, suffix, user_agent
end

-- A uuid-shaped Idempotency-Key for request n, as long as dukanext's.
function M.idempotency_key(n)
  return string.format("00000000-0000-4000-8000-%012d", n % 1000000000000)
end

-- The metadata dukanext's contenders put into the body, with counter n.
function M.metadata(n)
  return { url = "/products/running-shoes", productId = "p_81", quantity = n }
end

M.EVENT = "add_to_cart"

return M
