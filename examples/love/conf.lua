-- LÖVE settings of the dukanext example. DUKANEXT_HEADLESS=1 turns the window and
-- everything that draws or plays off, for a machine without a display (the spec that
-- runs this example in CI); the game logic, input and the frame loop stay.
function love.conf(t)
  t.identity = "dukanext-love-example" -- names the save folder
  t.version = "11.4"
  t.window.title = "dukanext in LÖVE"
  t.window.width, t.window.height = 480, 160
  if os.getenv("DUKANEXT_HEADLESS") == "1" then
    t.window = false
    for _, name in ipairs({ "window", "graphics", "audio", "sound", "video", "font", "image", "joystick", "touch" }) do
      t.modules[name] = false
    end
  end
end
