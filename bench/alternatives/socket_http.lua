-- Row 4: LuaSocket's socket.http (Debian lua-socket), blocking, one PUT after
-- another with the same body and headers as dukanext. socket.http opens a new
-- connection for every request (it does not keep connections alive).
--   lua5.4 bench/alternatives/socket_http.lua --url URL --body-template FILE [--n 5000] [--seq 1]
-- Prints one JSON line: events_per_s, cpu_us_per_event, sent, failed.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local lib = dofile(here .. "/../lib.lua")
local http = require("socket.http")
local ltn12 = require("ltn12")

local args = lib.args(arg)
local N = args.n or 5000
local seq = args.seq or 1
local prefix, suffix, user_agent = lib.body_template(args)
assert(args.url, "--url is required")

local sink = ltn12.sink.null()
local function put(n)
  local body = prefix .. n .. suffix
  local ok, status = http.request({
    url = args.url,
    method = "PUT",
    headers = {
      ["Content-Type"] = "application/json",
      ["Content-Length"] = tostring(#body),
      ["User-Agent"] = user_agent,
      ["Idempotency-Key"] = lib.idempotency_key(n),
      ["X-Dukanext-Attempt"] = "1",
      ["Accept"] = "*/*",
    },
    source = ltn12.source.string(body),
    sink = sink,
  })
  return ok and status == 200
end

put(seq - 1) -- warm-up

local sent, failed = 0, 0
collectgarbage()
local w0, c0 = lib.wall(), lib.cpu()
for i = 0, N - 1 do
  if put(seq + i) then sent = sent + 1 else failed = failed + 1 end
end
local c1, w1 = lib.cpu(), lib.wall()

lib.emit_result({
  n = N,
  events_per_s = sent / (w1 - w0),
  cpu_us_per_event = (c1 - c0) / N * 1e6,
  wall_s = w1 - w0,
  sent = sent,
  failed = failed,
})
os.exit(failed == 0 and 0 or 1)
