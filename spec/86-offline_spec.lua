-- Offline: failures that mean "no network" (a refused connection here, the collector
-- not yet listening on its port) wait for the network until max_age after emit, with
-- one attempt at a time, while answers from a server keep max_retries. Then the
-- collector comes up on that port and the backlog goes out, a few at a time at first.
local helpers = require("spec.helpers")

local dn = helpers.dn()
local now = helpers.now
local within = helpers.within
local API = "/access/api/v1/analytics"

-- Pumps for about seconds, whatever happens.
local function pump_for(seconds)
  local deadline = now() + seconds
  while now() < deadline do
    dn.pump()
    helpers.sleep(0.005)
  end
end

local function refused_url(port)
  return "http://127.0.0.1:" .. port .. API
end

describe("offline", function()
  local clients, collectors, errors

  -- A client with quick retries and the default max_retries, recording on_error.
  local function client(opts)
    opts = helpers.fast(opts)
    opts.on_error = function(err) errors[#errors + 1] = err end
    local cl = dn.new(opts)
    clients[#clients + 1] = cl
    return cl
  end

  local function collector(opts)
    local c = helpers.start_collector(opts)
    collectors[#collectors + 1] = c
    return c
  end

  before_each(function()
    clients, collectors, errors = {}, {}, {}
  end)

  after_each(function()
    for _, cl in ipairs(clients) do cl:close() end
    for _, c in ipairs(collectors) do c:stop() end
  end)

  it("loses nothing to an outage that outlasts max_retries: the backlog goes out when the network is back", function()
    local port = helpers.collector_lib.free_port()
    local cl = client({ endpoint = refused_url(port) })
    for i = 1, 25 do assert.is_true(cl:emit("offline", { i = i })) end
    -- Five retries from retry_base = 0.02 would be spent well within this.
    pump_for(1.5)
    local s = cl:stats()
    assert.equals(0, s.failed)
    assert.equals(25, s.queued + s.in_flight)
    assert.same({}, errors)

    local c = collector({ port = port })
    assert.is_true(cl:flush(within(20)))
    local seen = {}
    for _, e in ipairs(c:events()) do seen[#seen + 1] = e.metadata.i end
    table.sort(seen)
    local want = {}
    for i = 1, 25 do want[i] = i end
    assert.same(want, seen)
    assert.equals(25, cl:stats().sent)
    assert.same({}, errors)
  end)

  it("keeps the pump's work flat while offline: one attempt at a time, not one per event", function()
    local port = helpers.collector_lib.free_port()
    -- max_retries as high as it goes, so that only the schedule is measured.
    local cl = client({ endpoint = refused_url(port), max_in_flight = 4, max_retries = 100 })
    for i = 1, 300 do assert.is_true(cl:emit("offline", { i = i })) end
    pump_for(2)
    local s = cl:stats()
    assert.equals(300, s.queued + s.in_flight)
    assert.equals(0, s.failed)
    -- The first attempts (at most max_in_flight) and then one probe per backoff step
    -- (0 to 0.2 s apart): tens of attempts, where one schedule per event would make
    -- thousands.
    assert(s.retries < 120, s.retries .. " retries for 300 events in 2 s offline")
    assert(s.in_flight <= 1, s.in_flight .. " attempts in flight while offline")
  end)

  it("sends the backlog with a single attempt first, then a few at a time, not in one burst", function()
    local port = helpers.collector_lib.free_port()
    local cl = client({ endpoint = refused_url(port), max_in_flight = 16, max_retries = 100 })
    for i = 1, 30 do assert.is_true(cl:emit("offline", { i = i })) end
    pump_for(1)

    -- Every answer takes 0.3 s: whatever starts before the first answer is a burst.
    local c = collector({ port = port })
    c:plan({}, { delay = 0.3 })
    assert.is_true(cl:flush(within(30)))
    local records = c:requests()
    assert.equals(30, #records)
    table.sort(records, function(a, b) return a.time < b.time end)
    local first = records[1].time
    local before_first_answer = 0
    for _, r in ipairs(records) do
      if r.time < first + 0.25 then before_first_answer = before_first_answer + 1 end
    end
    assert.equals(1, before_first_answer)
    assert.equals(30, #c:events())
  end)

  it("gives an event up max_age after emit: EXPIRED, naming the last failure", function()
    local port = helpers.collector_lib.free_port()
    local cl = client({ endpoint = refused_url(port), max_age = 0.6 })
    local t0 = now()
    for i = 1, 3 do assert.is_true(cl:emit("offline", { i = i })) end
    assert.is_true(helpers.pump_until(function() return #errors == 3 end, within(10)))
    -- A lower bound only: max_age is a promise to keep trying that long.
    assert(now() - t0 >= 0.55, "given up after " .. (now() - t0) .. " s")
    local seen = {}
    for _, err in ipairs(errors) do
      assert.equals("EXPIRED", err.code)
      assert.is_nil(err.status)
      assert.equals("offline", err.event)
      assert.matches("max_age", err.message)
      assert.matches("CONNECT_ERROR", err.message)
      seen[#seen + 1] = helpers.decode(err.body).metadata.i
    end
    table.sort(seen)
    assert.same({ 1, 2, 3 }, seen)
    local s = cl:stats()
    assert.equals(3, s.failed)
    assert.equals(0, s.queued + s.in_flight)
  end)

  it("still fails an event after max_retries when a server answers 503", function()
    local c = collector()
    c:plan({}, { status = 503 })
    local cl = client({ endpoint = c.url, max_retries = 2 })
    assert.is_true(cl:emit("answered"))
    assert.is_true(cl:flush(within(10)))
    assert.equals(1, #errors)
    assert.equals("HTTP_503", errors[1].code)
    assert.equals(3, errors[1].attempts)
    assert.equals(3, #c:requests())
  end)

  it("rejects a max_age that is not a positive number of seconds", function()
    for _, bad in ipairs({ 0, -1, "a day" }) do
      local ok, err = pcall(dn.new, { endpoint = "http://127.0.0.1:9" .. API, max_age = bad })
      assert.is_false(ok)
      assert.matches("max_age", err)
    end
  end)

  it("with a spool, keeps an offline session through a restart and sends it next time", function()
    local port = helpers.collector_lib.free_port()
    local base = helpers.tmpdir()
    finally(function() helpers.remove_tree(base) end)
    local spool = base .. "/spool"

    -- The first run plays offline and quits.
    local rc, out, err = helpers.run_lua([[
      local spool, url = ...
      local dn = require("dukanext")
      local socket = require("socket")
      local cl = dn.new({ endpoint = url, spool = spool, spool_sync = "always",
        retry_base = 0.02, retry_max = 0.2, connect_timeout = 1 })
      for i = 1, 10 do assert(cl:emit("played_offline", { i = i })) end
      local t0 = socket.gettime()
      while socket.gettime() - t0 < 1.5 do dn.pump(); socket.sleep(0.005) end
      io.write("failed=", cl:stats().failed, "\n")
      cl:close()
    ]], { spool, refused_url(port) })
    assert.equals(0, rc, out .. err)
    assert.equals("failed=0\n", out)

    -- The next run has the network.
    local c = collector({ port = port })
    local cl = client({ endpoint = c.url, spool = spool })
    assert.equals(10, cl:stats().replayed)
    assert.is_true(cl:flush(within(20)))
    local seen = {}
    for _, e in ipairs(c:events()) do
      assert.equals("played_offline", e.event)
      seen[#seen + 1] = e.metadata.i
    end
    table.sort(seen)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, seen)
    assert.same({}, errors)
  end)

  it("counts max_age from the emit in an earlier run, not from the replay", function()
    local port = helpers.collector_lib.free_port()
    local base = helpers.tmpdir()
    finally(function() helpers.remove_tree(base) end)
    local spool = base .. "/spool"

    local rc, out, err = helpers.run_lua([[
      local spool, url = ...
      local dn = require("dukanext")
      local cl = dn.new({ endpoint = url, spool = spool, spool_sync = "always", max_age = 1 })
      assert(cl:emit("old", { n = 1 }))
      cl:close()
    ]], { spool, refused_url(port) })
    assert.equals(0, rc, out .. err)
    helpers.sleep(1.2)

    -- The network is back, but the event is older than max_age: given up, not sent.
    local c = collector({ port = port })
    local cl = client({ endpoint = c.url, spool = spool, max_age = 1 })
    assert.equals(1, cl:stats().replayed)
    assert.is_true(cl:flush(within(10)))
    assert.equals(1, #errors)
    assert.equals("EXPIRED", errors[1].code)
    assert.equals("old", errors[1].event)
    assert.equals(0, #c:requests())
    assert.equals(1, cl:stats().failed)
    -- Given up for good: the spool has nothing left for the run after.
    cl:close()
    local again = client({ endpoint = c.url, spool = spool })
    assert.equals(0, again:stats().replayed)
  end)
end)
