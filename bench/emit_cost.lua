-- Row 1: the CPU cost of one emit (validate, ids, encode, enqueue; nothing is sent)
-- against lua-cjson encoding the same full eight-key body in the same Lua.
--   lua5.4 bench/emit_cost.lua [--n 50000] [--reps 7] [--spool DIR --spool-sync MODE]
-- With --spool (issue 6), every client appends to a fresh folder under DIR with that
-- spool_sync ("always", "interval" or "never"): a fresh one, because a client adopts
-- and queues what an earlier client of the same folder left pending.
-- Prints one JSON line: us_emit, us_cjson (medians of CPU time per call), ratio
-- (median of the per-repetition ratios), their spreads, and wall-clock figures.
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/lib.lua")
lib.use_module_build()
local dn = require("dukanext")
local cjson = require("cjson")

local args = lib.args(arg)
local N = args.n or 50000
local REPS = args.reps or 7

-- No pump ever runs, so nothing is sent; the port is never connected to.
local ENDPOINT = "http://127.0.0.1:9/access/api/v1/analytics"

local metadata = lib.metadata(1)

local clients_made = 0
local function new_client()
  local opts = { endpoint = ENDPOINT, max_queue = N + 1, max_queue_bytes = 1024 * 1024 * 1024 }
  if args.spool then
    clients_made = clients_made + 1
    opts.spool = args.spool .. "/" .. clients_made
    assert(os.execute("mkdir -p '" .. opts.spool .. "'"))
    opts.spool_sync = args.spool_sync
    opts.spool_max_bytes = 1024 * 1024 * 1024
  end
  return dn.new(opts)
end

-- The body dukanext builds for this event, with this client's ids, for cjson to
-- encode: the same table shape, the same strings.
local function body_like(client)
  return {
    userId = client:get_user_id(),
    sessionId = client:get_session_id(),
    sessionStartPage = metadata.url,
    referrerUrl = cjson.null,
    hasCustomerAccount = false,
    customersId = cjson.null,
    event = lib.EVENT,
    metadata = metadata,
  }
end

local function time_emits(client)
  local emit = client.emit
  collectgarbage()
  local w0, c0 = lib.wall(), lib.cpu()
  for _ = 1, N do
    emit(client, lib.EVENT, metadata)
  end
  local c1, w1 = lib.cpu(), lib.wall()
  local s = client:stats()
  assert(s.queued == N, "emit refused events: queued " .. s.queued .. " of " .. N)
  return (c1 - c0) / N * 1e6, (w1 - w0) / N * 1e6
end

local function time_cjson(body)
  local encoder = cjson.new()
  local encode = encoder.encode
  encoder.encode_sparse_array(true, 1, 0) -- as dukanext's instance
  collectgarbage()
  local w0, c0 = lib.wall(), lib.cpu()
  for _ = 1, N do
    encode(body)
  end
  local c1, w1 = lib.cpu(), lib.wall()
  return (c1 - c0) / N * 1e6, (w1 - w0) / N * 1e6
end

-- Warm up: first session, first user id, the allocator's first pages.
do
  local c = new_client()
  for _ = 1, math.min(N, 2000) do c:emit(lib.EVENT, metadata) end
  time_cjson(body_like(c))
  c:close()
end

local emit_us, cjson_us, ratios, emit_wall, cjson_wall = {}, {}, {}, {}, {}
local body_len
for rep = 1, REPS do
  local client = new_client()
  local body = body_like(client)
  body_len = #cjson.encode(body)
  local e_cpu, e_wall = time_emits(client)
  client:close()
  local j_cpu, j_wall = time_cjson(body)
  emit_us[rep], cjson_us[rep], ratios[rep] = e_cpu, j_cpu, e_cpu / j_cpu
  emit_wall[rep], cjson_wall[rep] = e_wall, j_wall
end

lib.emit_result({
  n = N,
  reps = REPS,
  spool_sync = args.spool and (args.spool_sync or "interval") or nil,
  body_bytes = body_len,
  us_emit = lib.median(emit_us),
  us_cjson = lib.median(cjson_us),
  ratio = lib.median(ratios),
  spread_emit = lib.spread(emit_us),
  spread_cjson = lib.spread(cjson_us),
  spread_ratio = lib.spread(ratios),
  wall_us_emit = lib.median(emit_wall),
  wall_us_cjson = lib.median(cjson_wall),
})
