-- Host event loops: a luv (libuv) loop that waits on dn.poll_fd() with a poll handle
-- and on dn.next_timeout() with a timer, and pumps only when one of them wakes it
-- (the glue of examples/luv_loop.lua). Counts the pumps: a few per event, none idle.
-- Needs Debian's lua-luv for the Lua under test; skipped where it is missing.
--
-- Where the OS has no single descriptor for the transfers (the portable build that
-- macOS and the BSDs use, tested here with DUKANEXT_PORTABLE=1; Windows), poll_fd is
-- nil and next_timeout alone wakes the host: at most 0.01 s apart while a transfer
-- runs.
local helpers = require("spec.helpers")

local has_luv, uv = pcall(require, "luv")
local portable = os.getenv("DUKANEXT_PORTABLE") == "1"
local UNWATCHED_SECONDS = 0.01

describe("poll_fd and next_timeout", function()
  local dn, collector
  setup(function()
    dn = helpers.dn()
    collector = helpers.start_collector()
  end)
  teardown(function()
    if collector then collector:stop() end
  end)

  if portable then
    it("poll_fd is nil on the portable build", function()
      assert.is_nil(dn.poll_fd())
    end)

    it("a host that sleeps until next_timeout hears the answer soon after it comes", function()
      collector:reset()
      collector:plan({}, { delay = 0.3 })
      local cl = dn.new(helpers.fast({ endpoint = collector.url }))
      assert(cl:emit("sleepy_host"))
      local started, longest = helpers.now(), 0
      while cl:stats().sent < 1 and helpers.now() - started < helpers.within(10) do
        dn.pump()
        local due = dn.next_timeout()
        if due then
          longest = math.max(longest, due)
          helpers.sleep(due)
        end
      end
      local took = helpers.now() - started
      assert.are.equal(1, cl:stats().sent)
      assert.is_true(longest <= UNWATCHED_SECONDS, "slept " .. longest .. " s at once")
      assert.is_true(took >= 0.25, "delivered before the collector answered")
      cl:close()
    end)
  else
    it("poll_fd is a descriptor on Linux", function()
      local fd = dn.poll_fd()
      assert.are.equal("number", type(fd))
      assert.is_true(fd >= 0 and fd % 1 == 0, tostring(fd))
    end)
  end
end)

describe("a luv event loop", function()
  if not has_luv then
    it("delivers through poll_fd and next_timeout", function()
      pending("luv is not installed for " .. (jit and jit.version or _VERSION)
        .. " (Debian's lua-luv): " .. tostring(uv):match("^[^\n]*"))
    end)
    return
  end

  local dn, collector
  setup(function()
    dn = helpers.dn()
    collector = helpers.start_collector()
  end)
  teardown(function()
    if collector then collector:stop() end
  end)
  before_each(function()
    collector:reset()
    -- Pump counts are of this spec's work only: nothing else may be pending.
    assert.is_true(dn.flush(helpers.within(10)), "an earlier spec left events pending")
  end)

  -- The example's glue, counting pumps and what woke each one.
  local function watch()
    local w = { pumps = 0, by_poll = 0, by_timer = 0 }
    local fd = dn.poll_fd()
    local poll = fd and uv.new_poll(fd)
    local timer = uv.new_timer()
    local pump
    function w.rearm()
      local due = dn.next_timeout()
      if due then
        timer:start(math.ceil(due * 1000), 0, function()
          w.by_timer = w.by_timer + 1
          pump()
        end)
      else
        timer:stop()
        if w.on_idle then w.on_idle() end
      end
    end
    function pump()
      w.pumps = w.pumps + 1
      dn.pump()
      w.rearm()
    end
    if poll then
      poll:start("r", function()
        w.by_poll = w.by_poll + 1
        pump()
      end)
    end
    function w.close()
      if poll then poll:close() end
      timer:close()
      uv.run("nowait")
    end
    return w
  end

  -- Runs the loop until uv.stop() or `seconds`; answers the seconds it ran.
  local function run_loop(seconds)
    local guard = uv.new_timer()
    guard:start(math.floor(seconds * 1000), 0, function() uv.stop() end)
    local started = helpers.now()
    uv.run("default")
    guard:close()
    uv.run("nowait")
    return helpers.now() - started
  end

  -- At most a handful of pumps per event, and without poll_fd one more per
  -- UNWATCHED_SECONDS the loop ran.
  local function most_pumps(n, seconds)
    return 4 * n + (dn.poll_fd() and 0 or math.ceil(seconds / UNWATCHED_SECONDS))
  end

  local function report(what, w, n)
    io.stderr:write(("\n[92-luv] %s: %d events, %d pumps (%d woken by poll_fd, %d by the timer)\n")
      :format(what, n, w.pumps, w.by_poll, w.by_timer))
  end

  it("delivers events emitted from loop callbacks, pumping only when woken", function()
    local N = 20
    local cl = dn.new(helpers.fast({ endpoint = collector.url }))
    local w = watch()
    local emitted = 0
    local app = uv.new_timer()
    app:start(0, 20, function()
      emitted = emitted + 1
      assert(cl:emit("app_tick", { n = emitted }))
      w.rearm()
      if emitted == N then app:stop() end
    end)
    w.on_idle = function()
      if emitted == N then uv.stop() end
    end
    local ran = run_loop(helpers.within(10))
    app:close()
    w.close()

    assert.are.equal(N, cl:stats().sent)
    assert.are.equal(N, #collector:wait_events(N, 5))
    report("one event every 20 ms", w, N)
    -- Each event needs a start, a connect or send, and an answer: a handful of pumps.
    -- A loop that polled instead would pump about 25 times a second of waiting.
    assert.is_true(w.pumps >= N, "fewer pumps than events: " .. w.pumps)
    assert.is_true(w.pumps <= most_pumps(N, ran), "too many pumps: " .. w.pumps)
    cl:close()
  end)

  it("sleeps while the collector takes its time to answer", function()
    local N = 10
    collector:plan({}, { delay = 0.3 })
    local cl = dn.new(helpers.fast({ endpoint = collector.url }))
    local w = watch()
    for i = 1, N do assert(cl:emit("slow_answer", { n = i })) end
    w.rearm()
    w.on_idle = function() uv.stop() end
    local ran = run_loop(helpers.within(10))
    w.close()

    assert.are.equal(N, cl:stats().sent)
    assert.is_true(ran >= 0.25, "delivered before the collector answered")
    report(("answers after 0.3 s (loop ran %.2f s)"):format(ran), w, N)
    assert.is_true(w.pumps <= most_pumps(N, ran), "too many pumps: " .. w.pumps)
    cl:close()
  end)

  -- Delivers what cl has queued through the loop, then lets the loop idle for a second
  -- and checks that nothing woke it. what: words for the report.
  local function deliver_then_idle(cl, count, what)
    local w = watch()
    w.rearm()
    w.on_idle = function() uv.stop() end
    run_loop(helpers.within(10))
    assert.are.equal(count, cl:stats().sent)

    local before = w.pumps
    w.on_idle = nil
    assert.is_nil(dn.next_timeout())
    local ran = run_loop(1)
    w.close()
    io.stderr:write(("\n[92-luv] idle for %.2f s%s: %d pumps\n"):format(ran, what, w.pumps - before))
    assert.is_true(ran >= 0.99, "the loop returned early")
    assert.are.equal(before, w.pumps)
  end

  it("does not pump at all while there is nothing to deliver", function()
    local cl = dn.new(helpers.fast({ endpoint = collector.url }))
    assert(cl:emit("before_idle"))
    -- The connection stays open in curl's cache; the loop keeps watching.
    deliver_then_idle(cl, 1, "")
    cl:close()
  end)

  it("sleeps on while the server closes the connections kept for the next event", function()
    -- Kept-alive connections sit in curl's pool between events; here the server closes
    -- them 0.2 s after the last answer, which makes their sockets readable.
    local short = helpers.start_collector({ keepalive_timeout = "200ms" })
    local ok, err = pcall(function()
      local cl = dn.new(helpers.fast({ endpoint = short.url, max_in_flight = 4 }))
      for n = 1, 8 do assert(cl:emit("before_close", { n = n })) end
      deliver_then_idle(cl, 8, " while the server closed 4 connections")
      -- The next event goes out over a new connection.
      assert(cl:emit("after_close"))
      assert.is_true(cl:flush(helpers.within(5)))
      assert.are.equal(9, cl:stats().sent)
      cl:close()
    end)
    short:stop()
    assert(ok, err)
  end)

  it("examples/luv_loop.lua delivers to the collector", function()
    local started = helpers.now()
    local rc, out, err = helpers.run_lua('dofile("examples/luv_loop.lua")', { collector.url, "5" })
    local ran = helpers.now() - started
    assert.are.equal(0, rc, err)
    local sent, pumps = out:match("sent=(%d+) failed=0 pumps=(%d+)")
    assert.are.equal("5", sent, out .. err)
    assert.is_true(tonumber(pumps) <= most_pumps(5, ran), "too many pumps: " .. out)
    assert.are.equal(5, #collector:wait_events(5, 5))
  end)
end)
