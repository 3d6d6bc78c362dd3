-- Runs the test collector for manual use until Ctrl-C or stdin closes:
--   lua5.4 spec/support/collector/run.lua [--port N] [--tls] [--http2] [--workers N] [--dedupe]
local socket = require("socket")

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local collector = dofile(here .. "/../collector.lua")

local opts = {}
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--port" or a == "--workers" then
    local value = tonumber(arg[i + 1])
    if not value then
      io.stderr:write(a .. " needs a number\n")
      os.exit(2)
    end
    opts[a:sub(3)] = value
    i = i + 1
  elseif a == "--tls" or a == "--http2" or a == "--dedupe" then
    opts[a:sub(3)] = true
  else
    io.stderr:write("usage: run.lua [--port N] [--tls] [--http2] [--workers N] [--dedupe]\n")
    os.exit(2)
  end
  i = i + 1
end

local c = collector.start(opts)
print("collector running, nginx pid " .. c.pid .. ", dir " .. c.dir)
print("  url      " .. c.url)
if c.tls then
  print("  tls_url  " .. c.tls_url)
  print("  ca_file  " .. c.ca_file)
end
print("  control  PUT " .. c.control_base .. "/_collector/plan, POST " .. c.control_base .. "/_collector/reset")
print("  logs     " .. c.events_file .. ", " .. c.requests_file)
print("Ctrl-C or end of stdin stops it.")
io.stdout:flush()

-- select() with a timeout (rather than a blocking read) lets the interpreter's
-- SIGINT hook raise "interrupted!" within half a second.
local stdin = { getfd = function() return 0 end }
local ok, err = pcall(function()
  while true do
    local readable = socket.select({ stdin }, nil, 0.5)
    if readable[1] and io.read("*l") == nil then return end
  end
end)
c:stop()
if not ok and not tostring(err):find("interrupted", 1, true) then
  error(err, 0)
end
