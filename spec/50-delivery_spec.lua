-- Delivery: emit queues, pump and flush send through the shared multi handle, the
-- collector receives every accepted event once, and stats count what happened.
local helpers = require("spec.helpers")
local socket = require("socket")

local dn = helpers.dn()
local now = helpers.now

local function is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v)
end

local STAT_KEYS = { "queued", "in_flight", "sent", "failed", "dropped", "retries", "cancelled" }

-- Every counter present and an integer; then the expected values (0 when not given).
local function assert_stats(stats, expected)
  for _, key in ipairs(STAT_KEYS) do
    assert(is_integer(stats[key]), "stats." .. key .. " is not an integer: " .. tostring(stats[key]))
    assert.equals(expected[key] or 0, stats[key], "stats." .. key)
  end
end

-- The event names of the collector's event lines, sorted.
local function event_names(lines)
  local names = {}
  for i, line in ipairs(lines) do names[i] = helpers.decode(line).event end
  table.sort(names)
  return names
end

-- A loopback server that accepts connections and never answers.
local function silent_server()
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  return server, "http://127.0.0.1:" .. port .. "/access/api/v1/analytics"
end

describe("delivery", function()
  local c
  local clients = {}

  -- A client of the collector with quick retries; closed after the test.
  local function client(opts)
    opts = helpers.fast(opts)
    opts.endpoint = opts.endpoint or c.url
    local cl = dn.new(opts)
    clients[#clients + 1] = cl
    return cl
  end

  lazy_setup(function()
    c = helpers.start_collector()
  end)

  lazy_teardown(function()
    if c then c:stop() end
  end)

  before_each(function()
    c:reset()
  end)

  after_each(function()
    for i = #clients, 1, -1 do
      clients[i]:close()
      clients[i] = nil
    end
  end)

  it("delivers an emitted event on flush", function()
    local cl = client()
    assert.is_true(cl:emit("page_view", { url = "https://shop.example/" }))
    assert.is_true(cl:flush(5))

    local events = c:events()
    assert.equals(1, #events)
    assert.equals("page_view", events[1].event)
    assert.equals("https://shop.example/", events[1].metadata.url)
    assert_stats(cl:stats(), { sent = 1 })
  end)

  it("sends a body that the collector logs byte for byte", function()
    local cl = client()
    assert.is_true(cl:emit("add_to_cart", { product = "p-42", qty = 2, price = 9.5 }))
    assert.is_true(cl:flush(5))

    local requests = c:requests()
    assert.equals(1, #requests)
    local r = requests[1]
    assert.equals("PUT", r.method)
    assert.equals("/access/api/v1/analytics", r.uri)
    assert.equals("application/json", r.headers.content_type)
    assert.equals(tostring(#r.body), r.headers.content_length)
    assert.same({ r.body }, c:event_lines())
    local body = helpers.decode(r.body)
    assert.equals("add_to_cart", body.event)
    assert.same({ product = "p-42", qty = 2, price = 9.5 }, body.metadata)
  end)

  it("delivers 500 events exactly once, at most max_in_flight at a time", function()
    local cl = client({ max_in_flight = 16 })
    for i = 1, 500 do
      assert.is_true(cl:emit("bulk", { i = i }))
    end

    local most_in_flight = 0
    local done = helpers.pump_until(function()
      local s = cl:stats()
      if s.in_flight > most_in_flight then most_in_flight = s.in_flight end
      return s.queued + s.in_flight == 0
    end, 20)
    assert.is_true(done)
    assert(most_in_flight <= 16, most_in_flight .. " requests were in flight at once")
    assert(most_in_flight >= 8, "at most " .. most_in_flight .. " requests were in flight at once")

    local seen = {}
    for _, e in ipairs(c:events()) do
      local i = e.metadata.i
      assert.is_nil(seen[i], "event " .. tostring(i) .. " arrived twice")
      seen[i] = true
    end
    for i = 1, 500 do
      assert.is_true(seen[i], "event " .. i .. " never arrived")
    end
    assert.equals(500, #c:requests())
    assert_stats(cl:stats(), { sent = 500 })
  end)

  it("keeps one connection per slot between bursts, however few events run in between", function()
    local cl = client({ max_in_flight = 8 })
    local function burst(n, name)
      for i = 1, n do assert.is_true(cl:emit(name, { i = i })) end
      assert.is_true(cl:flush(10))
    end
    burst(32, "first_burst")
    burst(1, "alone")
    burst(32, "second_burst")

    local requests = c:requests()
    assert.equals(65, #requests)
    local connections, count = {}, 0
    for _, r in ipairs(requests) do
      local id = r.worker .. ":" .. r.connection
      if not connections[id] then count = count + 1 end
      connections[id] = true
    end
    assert(count <= 8, count .. " connections for 8 slots: kept-alive ones were closed")
  end)

  it("pump returns what is queued or in flight over all clients, and 0 when idle", function()
    assert.equals(0, dn.pump())
    -- The first three requests to arrive (a1, b1, b2) are held long enough to count.
    c:plan({ { delay = 0.5 }, { delay = 0.5 }, { delay = 0.5 } })
    local a = client({ max_in_flight = 1 })
    local b = client()
    for i = 1, 3 do assert.is_true(a:emit("from_a", { i = i })) end
    for i = 1, 2 do assert.is_true(b:emit("from_b", { i = i })) end

    local pending = dn.pump()
    assert(is_integer(pending), "pump must return an integer")
    assert.equals(5, pending)
    assert_stats(a:stats(), { in_flight = 1, queued = 2 })
    assert_stats(b:stats(), { in_flight = 2 })

    assert.is_true(dn.flush(5))
    assert.equals(0, dn.pump())
    assert.equals(5, #c:events())
  end)

  it("never blocks in pump or emit while the server delays its answers #timing", function()
    local held = {}
    for i = 1, 16 do held[i] = { delay = 2 } end
    c:plan(held)
    local cl = client({ max_in_flight = 16, timeout = 5 })

    local slowest_emit = 0
    for i = 1, 20 do
      local t0 = now()
      assert.is_true(cl:emit("while_slow", { i = i }))
      slowest_emit = math.max(slowest_emit, now() - t0)
    end

    local slowest_pump, pumps = 0, 0
    local stop = now() + 0.5
    while now() < stop do
      local t0 = now()
      local pending = dn.pump()
      slowest_pump = math.max(slowest_pump, now() - t0)
      pumps = pumps + 1
      assert.equals(20, pending)
      socket.sleep(0.005)
    end
    -- The answers take 2 s: a call that waited for one would take that long.
    assert(slowest_emit < helpers.within(0.05), "an emit took " .. slowest_emit .. " s")
    assert(slowest_pump < helpers.within(0.05), "a pump took " .. slowest_pump .. " s")
    assert(pumps >= helpers.at_least(20), "only " .. pumps .. " pumps in 0.5 s")
    assert_stats(cl:stats(), { in_flight = 16, queued = 4 })

    -- The held answers arrive, then the four that waited go out.
    assert.is_true(cl:flush(8))
    assert.equals(20, #c:events())
    assert_stats(cl:stats(), { sent = 20 })
  end)

  it("pumps every client of the state with one dn.pump", function()
    local a = client()
    local b = client()
    assert.is_true(a:emit("from_a"))
    assert.is_true(b:emit("from_b"))

    assert.is_true(helpers.pump_until(function()
      return a:stats().sent == 1 and b:stats().sent == 1
    end, 5))
    assert.same({ "from_a", "from_b" }, event_names(c:event_lines()))
  end)

  it("flush(t) returns true, alone, once everything is delivered", function()
    local cl = client()
    for i = 1, 3 do assert.is_true(cl:emit("flushed", { i = i })) end
    local results = { n = select("#", cl:flush(5)) }
    assert.equals(1, results.n)
    assert.is_true(cl:flush(5))
    assert.equals(3, #c:events())
    assert_stats(cl:stats(), { sent = 3 })
  end)

  it("flush(t) gives up at its deadline, and a later flush still delivers #timing", function()
    c:plan({ { delay = 3 } })
    local cl = client({ timeout = 5 })
    assert.is_true(cl:emit("slow_answer"))

    local t0 = now()
    local ok, err, pending = cl:flush(0.3)
    local elapsed = now() - t0
    assert.is_nil(ok)
    assert.equals("TIMEOUT", err)
    assert(is_integer(pending), "pending must be an integer")
    assert.equals(1, pending)
    assert(elapsed >= 0.25 and elapsed < helpers.within(1.5), "flush(0.3) took " .. elapsed .. " s")

    assert.is_true(cl:flush(10))
    assert.equals(1, #c:events())
    assert.equals(1, #c:requests())
    assert_stats(cl:stats(), { sent = 1 })
  end)

  it("dn.flush waits for every client, c:flush only for its own #timing", function()
    local server, silent_url = silent_server()
    finally(function() server:close() end)
    local quick = client()
    -- A timeout means no network: max_age ends the wait with the first attempt.
    local stuck = client({ endpoint = silent_url, timeout = helpers.within(1), max_age = 0.5 })
    assert.is_true(stuck:emit("never_answered"))
    assert.is_true(quick:emit("answered"))

    local t0 = now()
    assert.is_true(quick:flush(5))
    assert(now() - t0 < helpers.within(0.8), "c:flush waited for another client")
    assert_stats(quick:stats(), { sent = 1 })
    assert.equals(1, stuck:stats().in_flight)

    assert.is_true(dn.flush(5))
    assert(now() - t0 >= 0.9, "dn.flush returned before the stuck client was done")
    assert_stats(stuck:stats(), { failed = 1 })
  end)

  describe("stats", function()
    it("start at zero, all integers", function()
      assert_stats(client():stats(), {})
    end)

    it("count queued and in flight events", function()
      c:plan({ { delay = 0.5 } })
      local cl = client({ max_in_flight = 1 })
      for i = 1, 3 do assert.is_true(cl:emit("counted", { i = i })) end
      assert_stats(cl:stats(), { queued = 3 })
      dn.pump()
      assert_stats(cl:stats(), { queued = 2, in_flight = 1 })
      assert.is_true(cl:flush(5))
      assert_stats(cl:stats(), { sent = 3 })
    end)

    it("count refusals for a full queue as dropped", function()
      local cl = client({ max_queue = 2 })
      assert.is_true(cl:emit("kept", { i = 1 }))
      assert.is_true(cl:emit("kept", { i = 2 }))
      local ok, err = cl:emit("dropped", { i = 3 })
      assert.is_nil(ok)
      assert.matches("^QUEUE_FULL: ", err)
      assert_stats(cl:stats(), { queued = 2, dropped = 1 })
      assert.is_true(cl:flush(5))
      assert_stats(cl:stats(), { sent = 2, dropped = 1 })
      assert.equals(2, #c:events())
    end)

    it("count failures and retries", function()
      c:plan({ { status = 400, code = "INVALID_EVENT" }, { status = 500 } })
      local cl = client({ max_in_flight = 1 })
      assert.is_true(cl:emit("refused"))
      assert.is_true(cl:flush(5))
      assert.is_true(cl:emit("retried"))
      assert.is_true(cl:flush(5))
      assert_stats(cl:stats(), { sent = 1, failed = 1, retries = 1 })
    end)

    it("count what close leaves undelivered as cancelled", function()
      local cl = client()
      for i = 1, 4 do assert.is_true(cl:emit("cancelled", { i = i })) end
      assert.equals(4, cl:close())
      assert_stats(cl:stats(), { cancelled = 4 })
    end)
  end)

  it("configure replaces the default client; the old one still delivers what it accepted", function()
    finally(function() dn.configure() end)
    local old = dn.configure(helpers.fast({ endpoint = c.url .. "?client=old" }))
    assert.is_true(dn.emit("to_old", { i = 1 }))
    assert.is_true(dn.emit("to_old", { i = 2 }))
    local new = dn.configure(helpers.fast({ endpoint = c.url .. "?client=new" }))
    assert.are_not.equal(old, new)
    assert.is_true(dn.emit("to_new"))
    local old_ref = setmetatable({ old }, { __mode = "v" })
    old = nil
    collectgarbage()
    collectgarbage()

    assert.is_true(dn.flush(5))
    local uris = {}
    for _, r in ipairs(c:requests()) do
      local name = helpers.decode(r.body).event
      uris[name] = uris[name] or {}
      table.insert(uris[name], r.uri)
    end
    assert.same({ "/access/api/v1/analytics?client=old", "/access/api/v1/analytics?client=old" },
      uris.to_old)
    assert.same({ "/access/api/v1/analytics?client=new" }, uris.to_new)
    assert_stats(dn.stats(), { sent = 1 })

    -- Drained, the old default is no longer kept alive.
    collectgarbage()
    collectgarbage()
    assert.is_nil(old_ref[1])
  end)
end)
