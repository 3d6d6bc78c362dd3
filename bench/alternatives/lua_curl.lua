-- Row 4: Debian's lua-curl (0.3.0, `require "curl"`, Lua 5.1), blocking, with one
-- easy handle kept for every request so that its connection stays alive. Same body
-- and headers as dukanext.
--   lua5.1 bench/alternatives/lua_curl.lua --url URL --body-template FILE [--n 20000] [--seq 1]
-- Prints one JSON line: events_per_s, cpu_us_per_event, sent, failed. This binding has
-- no getinfo, so "sent" counts answers whose body is the service's success answer.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local lib = dofile(here .. "/../lib.lua")
local curl = require("curl")

local args = lib.args(arg)
local N = args.n or 20000
local seq = args.seq or 1
local prefix, suffix, user_agent = lib.body_template(args)
assert(args.url, "--url is required")

local SUCCESS = '{"status":"success"}'
local answer = {}
local easy = curl.easy_init()
easy:setopt(curl.OPT_URL, args.url)
easy:setopt(curl.OPT_CUSTOMREQUEST, "PUT")
easy:setopt(curl.OPT_USERAGENT, user_agent)
easy:setopt(curl.OPT_NOSIGNAL, 1)
easy:setopt(curl.OPT_WRITEFUNCTION, function(data, len)
  answer[#answer + 1] = data
  return len
end)

local headers = { "Content-Type: application/json", "X-Dukanext-Attempt: 1", "Expect:", "" }
local function put(n)
  headers[4] = "Idempotency-Key: " .. lib.idempotency_key(n)
  easy:setopt(curl.OPT_HTTPHEADER, headers)
  easy:setopt(curl.OPT_POSTFIELDS, prefix .. n .. suffix)
  for i = #answer, 1, -1 do answer[i] = nil end
  local ok = easy:perform()
  return ok ~= nil and table.concat(answer) == SUCCESS
end

put(seq - 1) -- warm-up: the connection

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
