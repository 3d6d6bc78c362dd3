-- Concurrency that tunes itself (max_in_flight = "auto"), HTTP/2 on few connections,
-- TLS sessions shared across connections, and what stats() says about them, against
-- collectors whose answers come a round trip late. No timing is asserted: the round
-- trips only make concurrency matter, every bound is on counts.
local helpers = require("spec.helpers")

local dn = helpers.dn()

local function is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v)
end

-- Pumps until pred(stats) holds, calling watch(stats) on each pump; answers the last stats.
local function pump_stats(client, pred, timeout, watch)
  local s
  helpers.pump_until(function()
    s = client:stats()
    if watch then watch(s) end
    return pred(s)
  end, timeout)
  return s
end

describe("max_in_flight options", function()
  it("takes \"auto\" (the default) or an integer, and checks the caps", function()
    local c = dn.new({ endpoint = "http://127.0.0.1:9/a", max_in_flight = "auto" })
    assert.equals(16, c:stats().in_flight_limit)
    c:close()
    c = dn.new({ endpoint = "http://127.0.0.1:9/a", max_in_flight = 5 })
    assert.equals(5, c:stats().in_flight_limit)
    c:close()
    for _, bad in ipairs({
      { max_in_flight = "fast" }, { max_in_flight = 0 }, { max_in_flight = 1025 },
      { max_in_flight = 2.5 }, { max_in_flight_cap = 0 }, { max_in_flight_cap = 1025 },
      { max_connections = 0 }, { max_connections = "auto" },
    }) do
      local name = next(bad)
      local ok, err = pcall(dn.new, bad)
      assert.is_false(ok)
      assert.matches("option '" .. name .. "'", err, 1, true)
    end
    local _, err = pcall(dn.new, { max_in_flight = "fast" })
    assert.matches('"auto" or an integer from 1 to 1024', err, 1, true)
  end)

  it("counts in stats(): the limit, latency, connections open, connects, resumed", function()
    local collector = helpers.start_collector()
    finally(function() collector:stop() end)
    local c = dn.new({ endpoint = collector.url })
    local s = c:stats()
    for _, key in ipairs({ "in_flight_limit", "connections", "connects", "tls_resumed" }) do
      assert(is_integer(s[key]), "stats." .. key .. " is not an integer: " .. tostring(s[key]))
    end
    assert.equals(0, s.latency_ms)
    assert.equals(0, s.connects)
    assert(c:emit("page_view", { url = "/" }))
    assert(c:flush(5))
    s = c:stats()
    assert.equals(1, s.connects)
    assert.equals(0, s.tls_resumed)
    assert.is_true(s.connections >= 1)
    assert.is_true(s.latency_ms > 0)
    c:close()
  end)
end)

describe("auto against a collector 50 ms away", function()
  local collector
  setup(function() collector = helpers.start_collector() end)
  teardown(function() if collector then collector:stop() end end)
  before_each(function() collector:reset() end)

  it("grows beyond 16 with a backlog, within max_connections over HTTP/1.1", function()
    collector:plan(nil, { delay = 0.05 })
    local c = dn.new({ endpoint = collector.url, max_connections = 24 })
    finally(function() c:close() end)
    for i = 1, 1500 do assert(c:emit("page_view", { n = i })) end
    local highest = 0
    local s = pump_stats(c, function(st) return st.sent >= 1000 end, 60, function(st)
      highest = math.max(highest, st.in_flight_limit)
    end)
    assert.is_true(s.sent >= 1000)
    -- Each HTTP/1.1 connection carries one attempt: the limit stops at max_connections.
    assert.equals(24, highest)
    assert.is_true(s.connects <= 24, "connects: " .. s.connects)
    local connections = {}
    for _, r in ipairs(collector:requests()) do connections[r.worker .. "/" .. r.connection] = true end
    local n = 0
    for _ in pairs(connections) do n = n + 1 end
    assert.is_true(n <= 24, n .. " connections at the collector")
  end)

  for _, answer in ipairs({
    { name = "503", action = { delay = 0.05, status = 503 } },
    { name = "429 with Retry-After", action = { delay = 0.05, status = 429, retry_after = 1 } },
  }) do
    it("halves at the first " .. answer.name .. " and keeps in-flight under it a round trip later",
      function()
        collector:plan(nil, { delay = 0.05 })
        -- Capped at 48: answers still coming back 200 cannot raise the limit in the very
        -- pump that reads the first refusal, so "before" is the limit the cut starts from.
        local c = dn.new(helpers.fast({ endpoint = collector.url, max_connections = 64,
          max_in_flight_cap = 48, max_retries = 0 }))
        finally(function() c:close() end)
        for i = 1, 5000 do assert(c:emit("page_view", { n = i })) end
        local s = pump_stats(c, function(st) return st.in_flight_limit >= 48 end, 30)
        assert.is_true(s.in_flight_limit >= 48, "limit reached only " .. s.in_flight_limit)
        collector:plan(nil, answer.action)
        local before = s.in_flight_limit
        s = pump_stats(c, function(st) return st.failed > 0 end, 10, function(st)
          if st.failed == 0 then before = st.in_flight_limit end
        end)
        assert.is_true(s.failed > 0)
        -- At once: the pump that read the first refusal cut the limit.
        assert.is_true(s.in_flight_limit <= before * 0.6,
          ("limit %d after the first refusal, %d before"):format(s.in_flight_limit, before))
        -- No attempt starts beyond the new limit: once those sent before the cut are
        -- answered (a round trip; bounded loosely for slow sanitized runs), no more
        -- than the limit are in flight.
        s = pump_stats(c, function(st) return st.in_flight <= st.in_flight_limit end,
          helpers.within(5))
        assert.is_true(s.in_flight <= s.in_flight_limit,
          ("%d in flight over a limit of %d"):format(s.in_flight, s.in_flight_limit))
      end)
  end

  it("leaves a fixed max_in_flight alone whatever the server answers", function()
    collector:plan(nil, { delay = 0.02, status = 503 })
    local c = dn.new(helpers.fast({ endpoint = collector.url, max_in_flight = 16, max_retries = 0 }))
    finally(function() c:close() end)
    for i = 1, 100 do assert(c:emit("page_view", { n = i })) end
    local s = pump_stats(c, function(st) return st.failed >= 100 end, 20)
    assert.equals(100, s.failed)
    assert.equals(16, s.in_flight_limit)
  end)
end)

describe("connections over TLS", function()
  it("resumes the TLS session another connection made (a shared session cache)", function()
    -- nginx closes connections idle for 200 ms, so the second burst connects anew.
    local collector = helpers.start_collector({ bench = true, delay = 0.001, tls = true,
      keepalive_timeout = "200ms" })
    finally(function() collector:stop() end)
    local c = dn.new({ endpoint = collector.tls_url, ca_file = collector.ca_file,
      http_version = "1.1", max_in_flight = 4 })
    finally(function() c:close() end)
    assert(c:emit("page_view", { n = 0 }))
    assert(c:flush(5))
    helpers.sleep(0.6)
    helpers.pump_until(function() return c:stats().connections == 0 end, 5)
    -- Four at once: four connections, three of them from easy handles that never
    -- made a session of their own.
    for i = 1, 4 do assert(c:emit("page_view", { n = i })) end
    assert(c:flush(5))
    local s = c:stats()
    local seen = collector:connections()
    assert.equals(5, s.connects)
    assert.equals(4, s.tls_resumed)
    assert.equals(5, seen.tls)
    assert.equals(4, seen.tls_resumed)
  end)

  it("multiplexes HTTP/2 on at most two connections at a 50 ms round trip", function()
    local collector = helpers.start_collector({ bench = true, delay = 0.05, tls = true, http2 = "tls" })
    finally(function() collector:stop() end)
    -- Another client of the same Lua state, idle after delivering over HTTP/1.1: its
    -- bound of 32 connections must not apply to the busy HTTP/2 client.
    local idle = dn.new({ endpoint = collector.url })
    finally(function() idle:close() end)
    assert(idle:emit("page_view", { n = 0 }))
    assert(idle:flush(5))
    local c = dn.new({ endpoint = collector.tls_url, ca_file = collector.ca_file })
    finally(function() c:close() end)
    for i = 1, 3000 do assert(c:emit("page_view", { n = i })) end
    local highest = 0
    local s = pump_stats(c, function(st) return st.sent + st.failed >= 3000 end, 60, function(st)
      highest = math.max(highest, st.in_flight_limit)
    end)
    assert.equals(3000, s.sent)
    -- More than one connection's 128 streams were in flight...
    assert.is_true(highest > 128, "the limit reached only " .. highest)
    -- ...on two connections, the first waited for by every attempt (PIPEWAIT).
    assert.is_true(s.connects <= 2, "connects: " .. s.connects)
    -- The idle client's one connection, and the two of HTTP/2.
    assert.is_true(collector:connections().connections <= 3)
  end)
end)
