-- A game's main loop at 60 frames a second: dukanext is pumped once per frame and
-- never waits on the network, so a slow or absent server costs no frame time. Played
-- offline, the events wait for the network (up to max_age after their emit), and
-- the spool keeps what is still undelivered at quit for the next run to send.
--
--   lua5.4 examples/game_loop.lua <endpoint> [seconds] [save folder]   (or DUKANEXT_ENDPOINT)
--
-- Needs LuaSocket for the frame clock (socket.gettime / socket.sleep).
--
-- require finds the module once installed (cmake --install); from a build tree, put
-- it on the path: LUA_CPATH="build/?.so;;" lua5.4 examples/...
local dn = require("dukanext")
local socket = require("socket")

local endpoint = assert(arg[1] or os.getenv("DUKANEXT_ENDPOINT"), "usage: game_loop.lua <endpoint> [seconds] [save folder]")
local play_seconds = tonumber(arg[2]) or 3
local save_dir = arg[3] or os.getenv("TMPDIR") or "/tmp"

dn.configure({
  endpoint = endpoint,
  -- The player's ids survive restarts of the game.
  storage = dn.file_storage(save_dir .. "/dukanext-ids.json"),
  -- So do the events not yet delivered: a session played offline is sent next time.
  spool = save_dir .. "/dukanext-spool",
  -- No fsync in pump, so no frame waits on the disk: a crash of the game still loses
  -- nothing (each record is in the kernel once emit returns), a power cut the last
  -- few seconds.
  spool_sync = "never",
  -- How long an event keeps waiting for the network (the default is a day).
  max_age = 7 * 24 * 3600,
  on_error = function(err)
    io.stderr:write(("analytics: %s not delivered: %s\n"):format(tostring(err.event), err.code))
  end,
})

local FRAME = 1 / 60
local frames, slowest_pump = 0, 0
local level, level_started = 1, socket.gettime()
dn.emit("game_start", { build = "1.4.2", platform = "linux" })
dn.emit("level_start", { level = level })

local stop_at = socket.gettime() + play_seconds
while socket.gettime() < stop_at do
  local frame_start = socket.gettime()

  -- Game logic: a level ends every second.
  if frame_start - level_started >= 1 then
    dn.emit("level_complete", { level = level, seconds = frame_start - level_started, frames = frames })
    level, level_started = level + 1, frame_start
    dn.emit("level_start", { level = level })
  end

  local pump_start = socket.gettime()
  dn.pump()
  slowest_pump = math.max(slowest_pump, socket.gettime() - pump_start)

  frames = frames + 1
  local left = FRAME - (socket.gettime() - frame_start)
  if left > 0 then socket.sleep(left) end
end

dn.emit("game_quit", { level = level, frames = frames })
-- Quitting: give delivery at most two seconds, never hang the exit; what is left
-- stays in the spool.
local ok, err, pending = dn.flush(2)
local s = dn.stats()
print(("frames=%d slowest_pump_ms=%.3f sent=%d failed=%d pending=%s"):format(
  frames, slowest_pump * 1000, s.sent, s.failed, ok and 0 or (tostring(err) .. " " .. pending)))
