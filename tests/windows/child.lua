-- The Windows side of the Windows tests: one step of a case, run by lua.exe or
-- luajit.exe under Wine (tests/windows/run.lua starts it and checks the collector).
-- Plain Lua 5.1-5.4, nothing but dukanext and what it needs. Prints key=value lines.
--
--   child.lua <step> <endpoint or -> <folder or -> [count] [tag] [ca_file]
local dn = require("dukanext")

local step, endpoint, folder, count, tag, ca_file = ...
count = tonumber(count) or 1
if endpoint == "-" then endpoint = nil end
if folder == "-" then folder = nil end
if tag == "-" then tag = nil end
if ca_file == "-" then ca_file = nil end

-- "José-日本", in UTF-8 bytes, written out so that the source is plain ASCII.
local UTF8_NAME = "Jos\195\169-\230\151\165\230\156\172"

local function say(key, value)
  io.stdout:write(key, "=", tostring(value), "\n")
  io.stdout:flush()
end

local errors = {}
local function options(extra)
  local o = {
    endpoint = endpoint,
    retry_base = 0.05,
    retry_max = 0.2,
    timeout = 10,
    connect_timeout = 5,
    on_error = function(err) errors[#errors + 1] = err.code end,
  }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function report(flushed, flush_err)
  local s = dn.stats()
  say("flushed", flushed == true and "true" or tostring(flush_err))
  for _, k in ipairs({ "sent", "failed", "retries", "replayed", "spool_pending", "unspooled" }) do
    say(k, s[k])
  end
  say("errors", table.concat(errors, ","))
end

-- count events named tag (or `event`), each with metadata {i = <its number>}.
local function emit_all(event)
  for i = 1, count do
    local ok, err = dn.emit(tag or event, { i = i })
    if not ok then say("refused", err) end
  end
end

local steps = {}

-- Ids from a file_storage, created or read back.
function steps.ids()
  local storage = dn.file_storage(folder .. "/ids.json")
  dn.configure(options({ storage = storage }))
  say("user", dn.get_user_id())
  say("session", dn.get_session_id())
end

-- count events, then flush: what arrives is checked byte for byte by the runner.
function steps.deliver()
  dn.configure(options())
  say("user", dn.get_user_id())
  say("session", dn.get_session_id())
  emit_all("windows_case")
  report(dn.flush(30))
end

-- What a host event loop gets here: no descriptor, and when the next pump is due.
function steps.host_loop()
  dn.configure(options())
  say("poll_fd", dn.poll_fd())
  say("idle_timeout", dn.next_timeout())
  assert(dn.emit("windows_host_loop"))
  say("timeout_after_emit", dn.next_timeout())
  report(dn.flush(30))
  say("timeout_after_flush", dn.next_timeout())
end

-- flush(1) against a server that accepts and does not answer: the time it took, by
-- the C runtime's clock (wall time since the process started, on Windows).
function steps.deadline()
  dn.configure(options({ timeout = 60 }))
  assert(dn.emit("windows_hang"))
  local started = os.clock()
  local ok, err, pending = dn.flush(1)
  say("waited", ("%.3f"):format(os.clock() - started))
  say("result", tostring(ok) .. " " .. tostring(err) .. " " .. tostring(pending))
end

-- One event over TLS (Schannel), trusting ca_file when given; count 0: insecure = true.
function steps.tls()
  dn.configure(options({ ca_file = ca_file, max_retries = 0, insecure = count == 0 }))
  assert(dn.emit(tag or "windows_tls"))
  report(dn.flush(30))
end

-- file_storage and spool in a folder with a non-ASCII UTF-8 name.
function steps.utf8()
  local dir = folder .. "/" .. UTF8_NAME
  dn.configure(options({
    storage = dn.file_storage(dir .. "/ids.json"),
    spool = dir .. "/spool",
    spool_sync = "always",
  }))
  say("user", dn.get_user_id())
  emit_all("windows_utf8")
  report(dn.flush(30))
end

-- Emits into the spool for ever (until killed), saying each acknowledged event.
function steps.spool_writer()
  dn.configure(options({ spool = folder, spool_sync = "always" }))
  for i = 1, 1000000 do
    if dn.emit(tag or "windows_spool", { i = i }) then say("acked", i) end
    dn.pump()
  end
end

-- Opens a spool folder, replays what it finds, emits count more and delivers all.
function steps.spool()
  dn.configure(options({ spool = folder }))
  emit_all("windows_spool")
  report(dn.flush(60))
end

local run = steps[step]
if not run then
  io.stderr:write("child.lua: unknown step " .. tostring(step) .. "\n")
  os.exit(2)
end
run()
say("done", step)
