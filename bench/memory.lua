-- Row 6a: the memory one queued event holds beyond its JSON body.
--   lua5.4 bench/memory.lua [--n 200000]
-- Emits n events to a client that is never pumped (so all stay queued) and reports
-- two figures per event, each minus the event's own body bytes:
--   accounted: stats().queued_bytes / n, dukanext's own count (the event record's
--     fixed part + body + User-Agent + client ip), what max_queue_bytes bounds;
--   rss: growth of the process's resident set / n: what malloc really takes, its
--     chunk headers and rounding included. Lua garbage is kept out: one metadata
--     table is reused (only its counter changes) and the collector runs before each
--     reading. RSS rather than mallinfo2: it also counts what the allocator keeps
--     and is readable from plain Lua.
-- Prints one JSON line: body_bytes (mean), accounted_overhead, rss_overhead.
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/lib.lua")
lib.use_module_build()
local dn = require("dukanext")
local cjson = require("cjson")

local args = lib.args(arg)
local N = args.n or 200000

local client = dn.new({
  endpoint = "http://127.0.0.1:9/access/api/v1/analytics",
  max_queue = N + 1,
  max_queue_bytes = 1024 * 1024 * 1024,
})
local metadata = lib.metadata(0)
local body = {
  userId = client:get_user_id(),
  sessionId = client:get_session_id(),
  sessionStartPage = metadata.url,
  referrerUrl = cjson.null,
  hasCustomerAccount = false,
  customersId = cjson.null,
  event = lib.EVENT,
  metadata = metadata,
}
-- The body's length for counter 0; counter i adds its extra digits.
local base_len = #cjson.encode(body)
local body_bytes = 0
for i = 1, N do body_bytes = body_bytes + base_len + #tostring(i) - 1 end

local emit = client.emit
collectgarbage()
collectgarbage()
local rss0 = lib.rss()
for i = 1, N do
  metadata.quantity = i
  emit(client, lib.EVENT, metadata)
end
collectgarbage()
collectgarbage()
local rss1 = lib.rss()
local s = client:stats()
assert(s.queued == N, "queued " .. s.queued .. " of " .. N)
client:close()

lib.emit_result({
  n = N,
  body_bytes = body_bytes / N,
  accounted_overhead = (s.queued_bytes - body_bytes) / N,
  rss_overhead = (rss1 - rss0 - body_bytes) / N,
})
