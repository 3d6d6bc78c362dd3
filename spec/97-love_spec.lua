-- examples/love in the real LÖVE 11.4, headless (DUKANEXT_HEADLESS=1: no window, no
-- graphics), against the collector: events from love.load, love.update and the input
-- callbacks arrive, ids live in the game's save folder across two starts, love.quit's
-- flush(2) delivers the rest, and the worst frame's pump is reported (bounded loosely:
-- a pump must never stall a frame; bench/ measures).
--
-- LÖVE runs LuaJIT, so this spec needs the LuaJIT module: ctest's `love-example` runs
--   DUKANEXT_CPATH=$PWD/build/lua-luajit/?.so luajit /usr/bin/busted --run=love
-- (the default busted run leaves the #love tag out).
local helpers = require("spec.helpers")

local LOVE = os.getenv("DUKANEXT_LOVE") or "love"
local PLAY_SECONDS = 2

describe("examples/love in LÖVE #love", function()
  local collector, home
  setup(function()
    assert(jit, "run this spec with LuaJIT: LÖVE loads the module built for it")
    collector = helpers.start_collector()
  end)
  teardown(function()
    if collector then collector:stop() end
  end)
  before_each(function()
    collector:reset()
    home = helpers.tmpdir()
  end)
  after_each(function()
    if home then helpers.remove_tree(home) end
  end)

  -- One start of the game that plays by itself for `seconds`, then quits. Answers the
  -- figures it printed on quit.
  local function play(seconds)
    local env = table.concat({
      "HOME=" .. helpers.quote(home),
      "XDG_DATA_HOME=" .. helpers.quote(home .. "/share"),
      "XDG_RUNTIME_DIR=" .. helpers.quote(home),
      "DUKANEXT_HEADLESS=1",
      "DUKANEXT_CPATH=" .. helpers.quote(os.getenv("DUKANEXT_CPATH") or "./build/lua-luajit/?.so"),
    }, " ")
    local out = helpers.shell(("%s timeout 60 %s examples/love %s --autoplay %s 2>&1; echo rc=$?"):format(
      env, helpers.quote(LOVE), helpers.quote(collector.url), seconds))
    assert.is_truthy(out:find("rc=0", 1, true), out)
    local figures = {}
    local line = out:match("dukanext: ([^\n]*)")
    assert.is_truthy(line, out)
    for k, v in line:gmatch("(%w[%w_]*)=(%S+)") do figures[k] = v end
    return figures, out
  end

  it("delivers what the game emits, keeps the player's ids in the save folder, and never stalls a frame", function()
    collector:plan({}, { delay = 0.05 })
    local first, out = play(PLAY_SECONDS)
    local second = play(1)

    local sent = 0
    for _, figures in ipairs({ first, second }) do
      assert.are.equal("true", figures.flushed, out)
      assert.are.equal("0", figures.pending, out)
      assert.is_true(tonumber(figures.frames) >= 30, "only " .. figures.frames .. " frames")
      -- The per-frame pumps delivered while the game ran, not only the flush on quit.
      assert.is_true(tonumber(figures.sent_while_playing) >= tonumber(figures.sent) / 2,
        out)
      -- Loose: a pump that stalls a quarter of a second is a bug, whatever the load.
      assert.is_true(tonumber(figures.slowest_pump_ms) < helpers.within(250),
        "a pump took " .. figures.slowest_pump_ms .. " ms")
      sent = sent + tonumber(figures.sent)
      io.stderr:write(("\n[97-love] %s frames, %s events sent, slowest pump %s ms\n"):format(
        figures.frames, figures.sent, figures.slowest_pump_ms))
    end

    -- Each event went once, under its own Idempotency-Key, and was taken. (The
    -- collector files an event whose body it has seen already as a duplicate: both
    -- starts send an identical level_start, for one.)
    local requests = collector:wait_requests(sent, 5)
    assert.are.equal(sent, #requests)
    local keys, events = {}, {}
    for i, rec in ipairs(requests) do
      assert.are.equal(200, rec.status)
      local key = rec.all_headers["idempotency-key"]
      assert.is_nil(keys[key], "sent twice: " .. rec.body)
      keys[key] = true
      events[i] = helpers.decode(rec.body)
    end

    local count = {}
    for _, e in ipairs(events) do count[e.event] = (count[e.event] or 0) + 1 end
    assert.are.equal(2, count.game_start, "love.load")
    assert.are.equal(2, count.game_quit, "love.quit")
    assert.is_true((count.level_complete or 0) >= 1, "love.update")
    assert.is_true((count.key_pressed or 0) >= 2, "love.keypressed")
    assert.is_true((count.click or 0) >= 2, "love.mousepressed")
    assert.are.equal("love 11.4.0", events[1].metadata.engine)

    -- One player over both starts: the id kept in the save folder.
    local ids_file = home .. "/share/love/dukanext-love-example/analytics/ids.json"
    local stored = helpers.decode(assert(helpers.read_file(ids_file), ids_file .. " missing"))
    for _, e in ipairs(events) do assert.are.equal(stored.dn_user_id, e.userId) end
  end)
end)
