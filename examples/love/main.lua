-- dukanext in a LÖVE game: events from love.load, love.update and the input
-- callbacks, one dn.pump() per frame in love.update, dn.flush(2) in love.quit. The
-- player's ids and the undelivered events live in the game's save folder, so they
-- survive a restart (and a crash: the spool).
--
--   love examples/love <endpoint>                 (or DUKANEXT_ENDPOINT)
--   love examples/love <endpoint> --autoplay 3    presses keys and clicks by itself,
--                                                 then quits after 3 seconds
--
-- LÖVE runs LuaJIT: install dukanext for Lua 5.1 (LuaRocks --lua-version=5.1, into a
-- tree LÖVE's package.cpath searches), or point DUKANEXT_CPATH at a build
-- (build/lua-luajit/?.so of cmake -DDUKANEXT_ALL_LUAS=ON).
local cpath = os.getenv("DUKANEXT_CPATH")
if cpath then package.cpath = cpath .. ";" .. package.cpath end
local dn = require("dukanext")

local game = {
  level = 1,
  level_time = 0,
  frames = 0,
  slowest_pump = 0, -- seconds: the worst frame's dn.pump()
  autoplay = nil, -- seconds left to play by itself, or nil
  next_input = 0,
}

local function emit(event, metadata)
  local ok, err = dn.emit(event, metadata)
  if not ok then print("analytics: " .. event .. " refused: " .. err) end
end

local function read_args(args)
  local endpoint
  local i = 1
  while args[i] do
    if args[i] == "--autoplay" then
      game.autoplay = tonumber(args[i + 1]) or 3
      i = i + 1
    else
      endpoint = endpoint or args[i]
    end
    i = i + 1
  end
  return endpoint or os.getenv("DUKANEXT_ENDPOINT")
end

function love.load(args)
  local endpoint = assert(read_args(args), "usage: love examples/love <endpoint> [--autoplay seconds]")
  -- The save folder exists once something is made in it.
  love.filesystem.createDirectory("analytics")
  local save_dir = love.filesystem.getSaveDirectory() .. "/analytics"
  dn.configure({
    endpoint = endpoint,
    storage = dn.file_storage(save_dir .. "/ids.json"),
    spool = save_dir .. "/spool",
    -- A crash or a kill loses nothing whatever the mode; "never" leaves the fsync to the
    -- system, so no frame waits on the disk (the default's group commit fsyncs from
    -- pump). Events of the last seconds before a power loss may be lost.
    spool_sync = "never",
    on_error = function(err)
      print(("analytics: %s not delivered: %s"):format(tostring(err.event), err.code))
    end,
  })
  local major, minor, revision = love.getVersion()
  emit("game_start", {
    engine = ("love %d.%d.%d"):format(major, minor, revision),
    os = love.system.getOS(),
  })
  emit("level_start", { level = game.level })
end

-- What a player would do, through LÖVE's own event queue: the callbacks below run as
-- they would for real input.
local function autoplay(dt)
  game.autoplay = game.autoplay - dt
  if game.autoplay <= 0 then
    love.event.quit()
    return
  end
  game.next_input = game.next_input - dt
  if game.next_input <= 0 then
    game.next_input = 0.25
    love.event.push("keypressed", "space", "space", false)
    love.event.push("mousepressed", 100, 50, 1, false, 1)
  end
end

function love.update(dt)
  game.frames = game.frames + 1
  game.level_time = game.level_time + dt
  if game.level_time >= 1 then
    emit("level_complete", { level = game.level, seconds = game.level_time })
    game.level, game.level_time = game.level + 1, 0
    emit("level_start", { level = game.level })
  end
  if game.autoplay then autoplay(dt) end

  -- Once per frame; never waits on the network.
  local started = love.timer.getTime()
  dn.pump()
  local spent = love.timer.getTime() - started
  if spent > game.slowest_pump then game.slowest_pump = spent end
end

function love.keypressed(key)
  if key == "escape" then
    love.event.quit()
    return
  end
  emit("key_pressed", { key = key, level = game.level, frame = game.frames })
end

function love.mousepressed(x, y, button)
  emit("click", { x = x, y = y, button = button, level = game.level, frame = game.frames })
end

function love.draw()
  local stats = dn.stats()
  love.graphics.print(("level %d  sent %d  pending %d  slowest pump %.3f ms"):format(
    game.level, stats.sent, stats.queued + stats.in_flight, game.slowest_pump * 1000), 10, 10)
  love.graphics.print("space or click: an event; escape: quit", 10, 30)
end

function love.quit()
  local sent_while_playing = dn.stats().sent
  emit("game_quit", { level = game.level, frames = game.frames })
  -- At most 2 s: what is not delivered by then stays in the spool for the next start.
  local flushed, _, pending = dn.flush(2)
  local stats = dn.stats()
  print(("dukanext: frames=%d sent_while_playing=%d sent=%d pending=%d slowest_pump_ms=%.3f flushed=%s"):format(
    game.frames, sent_while_playing, stats.sent, pending or 0, game.slowest_pump * 1000,
    tostring(flushed == true)))
  return false
end
