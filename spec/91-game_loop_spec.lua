-- Game and app loops: pump once per frame at 60 frames a second while the collector
-- answers slowly (0.3 s). No pump may wait for an answer: each is timed, and a pump
-- over 50 ms (a sixth of the answer's delay; stretched on slow runs by helpers.within)
-- fails the spec. A bound on blocking, not a benchmark: bench/ measures pumps, and the
-- spec prints its figures. Then the quit path: flush with a deadline delivers everything.
-- Its cases are tagged #timing: ctest runs them apart from the heavy entries.
local helpers = require("spec.helpers")

describe("a 60 fps game loop #timing", function()
  local dn, collector, dir
  setup(function()
    dn = helpers.dn()
    collector = helpers.start_collector()
  end)
  teardown(function()
    if collector then collector:stop() end
  end)
  before_each(function()
    collector:reset()
    dir = helpers.tmpdir()
  end)
  after_each(function()
    if dir then helpers.remove_tree(dir) end
  end)

  local FRAME = 1 / 60
  local MAX_PUMP = helpers.within(0.05)

  it("never spends more than a few milliseconds in a frame's pump while answers are slow", function()
    collector:plan({}, { delay = 0.3 })
    local cl = dn.new(helpers.fast({
      endpoint = collector.url,
      storage = dn.file_storage(dir .. "/ids.json"),
    }))
    -- Closed even when an assertion fails: events left in flight when the collector
    -- stops would wait for the network (max_age) and hold up the specs that follow.
    finally(function() cl:close() end)

    local emitted, frames, pump_times = 0, 0, {}
    local function emit(event, metadata)
      assert(cl:emit(event, metadata))
      emitted = emitted + 1
    end

    local level, level_frames = 1, 0
    emit("game_start", { build = "spec" })
    emit("level_start", { level = level })
    local stop_at = helpers.now() + 2
    while helpers.now() < stop_at do
      local frame_start = helpers.now()
      frames, level_frames = frames + 1, level_frames + 1
      if frames % 5 == 0 then emit("shot", { level = level, frame = frames }) end
      if level_frames == 30 then
        emit("level_complete", { level = level, frames = level_frames })
        level, level_frames = level + 1, 0
        emit("level_start", { level = level })
      end

      local pump_start = helpers.now()
      dn.pump()
      pump_times[#pump_times + 1] = helpers.now() - pump_start

      local left = FRAME - (helpers.now() - frame_start)
      if left > 0 then helpers.sleep(left) end
    end
    emit("game_quit", { level = level, frames = frames })

    -- While the loop ran, answers were still on their way: the pumps did not wait.
    assert.is_true(cl:stats().sent < emitted, "the slow answers were not slow")

    table.sort(pump_times)
    local total = 0
    for _, t in ipairs(pump_times) do total = total + t end
    local max = pump_times[#pump_times]
    io.stderr:write(("\n[91-game_loop] %d frames, %d events: pump max %.3f ms, p99 %.3f ms,"
      .. " mean %.3f ms\n"):format(frames, emitted, max * 1000,
      pump_times[math.ceil(#pump_times * 0.99)] * 1000, total / #pump_times * 1000))
    -- 120 frames if every one kept its 16.7 ms; a pump that waited would leave ~7.
    assert.is_true(frames >= helpers.at_least(60), "the loop ran only " .. frames .. " frames")
    assert.is_true(max <= MAX_PUMP, ("a pump took %.3f ms"):format(max * 1000))

    -- Quitting: a deadline, and everything delivered before it.
    local quit_start = helpers.now()
    assert.is_true(cl:flush(helpers.within(5)))
    io.stderr:write(("[91-game_loop] flush on quit: %.3f s\n"):format(helpers.now() - quit_start))
    local s = cl:stats()
    assert.are.equal(emitted, s.sent)
    assert.are.equal(0, s.failed + s.dropped)
    local events = collector:wait_events(emitted, 5)
    assert.are.equal(emitted, #events)

    -- One player: every event carries the user id kept in the file.
    local stored = helpers.decode(helpers.read_file(dir .. "/ids.json"))
    for _, e in ipairs(events) do assert.are.equal(stored.dn_user_id, e.userId) end
    cl:close()
  end)

  it("gives up at the flush deadline on quit when the collector is too slow", function()
    collector:plan({}, { delay = 3 })
    local cl = dn.new(helpers.fast({ endpoint = collector.url, timeout = 10 }))
    assert(cl:emit("game_quit"))
    local started = helpers.now()
    local ok, err, pending = cl:flush(0.3)
    local waited = helpers.now() - started
    assert.is_nil(ok)
    assert.are.equal("TIMEOUT", err)
    assert.are.equal(1, pending)
    assert.is_true(waited >= 0.29 and waited <= helpers.within(1), "flush waited " .. waited .. " s")
    cl:close()
  end)

  it("examples/game_loop.lua plays, then delivers everything on quit", function()
    collector:plan({}, { delay = 0.1 })
    local rc, out, err = helpers.run_lua('dofile("examples/game_loop.lua")',
      { collector.url, "1.5", dir })
    assert.are.equal(0, rc, err)
    local frames, slowest, sent = out:match("frames=(%d+) slowest_pump_ms=([%d.]+) sent=(%d+) failed=0 pending=0")
    assert.is_truthy(frames, out .. err)
    io.stderr:write(("\n[91-game_loop] example: %s frames, slowest pump %s ms\n"):format(frames, slowest))
    assert.is_true(tonumber(slowest) <= MAX_PUMP * 1000, out)
    assert.are.equal(tonumber(sent), #collector:wait_events(tonumber(sent), 5))
    assert.is_truthy(helpers.read_file(dir .. "/dukanext-ids.json"))
  end)
end)
