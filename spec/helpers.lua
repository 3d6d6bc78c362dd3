-- Shared by the specs: finds the module under test, starts the collector, pumps.
local helpers = {}

-- ctest points DUKANEXT_CPATH at the build under test (plain or sanitized).
local cpath = os.getenv("DUKANEXT_CPATH") or "./build/?.so"
if not package.cpath:find(cpath, 1, true) then
  package.cpath = cpath .. ";" .. package.cpath
end

local socket = require("socket")
local cjson = require("cjson")
helpers.collector_lib = require("spec.support.collector")

helpers.now = socket.gettime
helpers.sleep = socket.sleep

function helpers.dn()
  return require("dukanext")
end

function helpers.start_collector(opts)
  return helpers.collector_lib.start(opts or {})
end

-- Options that make retries quick enough for a test, merged under opts. The timeouts
-- are upper bounds on a delay, stretched on a slow run (helpers.within, below): an
-- answer the collector holds for 0.5 s must not time out under valgrind.
function helpers.fast(opts)
  local o = { retry_base = 0.02, retry_max = 0.2, timeout = 2 * helpers.SLOW,
    connect_timeout = 1 * helpers.SLOW }
  for k, v in pairs(opts or {}) do o[k] = v end
  return o
end

-- Pumps until pred() holds or timeout seconds pass; answers pred's last value.
function helpers.pump_until(pred, timeout)
  local dn = helpers.dn()
  local deadline = socket.gettime() + (timeout or 5)
  repeat
    dn.pump()
    local v = pred()
    if v then return v end
    socket.sleep(0.005)
  until socket.gettime() > deadline
  return pred()
end

function helpers.decode(s)
  return cjson.decode(s)
end

-- A storage backed by a plain table, that records every call.
function helpers.recording_storage(initial)
  local data, calls = {}, {}
  for k, v in pairs(initial or {}) do data[k] = v end
  local s = { data = data, calls = calls }
  function s.get(key)
    calls[#calls + 1] = { "get", key }
    return data[key]
  end
  function s.set(key, value)
    calls[#calls + 1] = { "set", key, value }
    data[key] = value
  end
  return s
end

helpers.UUID = "%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x"
helpers.USER_ID = "^" .. helpers.UUID .. "%-%d+$"
helpers.SESSION_ID = "^SESSION%-" .. helpers.UUID .. "%-%d+$"

-- Wall-clock milliseconds since the epoch, as the module's ids carry them.
function helpers.now_ms()
  return math.floor(socket.gettime() * 1000)
end

-- Runs a shell command and answers its stdout without the trailing newline.
function helpers.shell(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return (out:gsub("\n$", ""))
end

-- A fresh empty folder under $TMPDIR; remove it with helpers.remove_tree.
function helpers.tmpdir()
  local dir = helpers.shell('mktemp -d "${TMPDIR:-/tmp}/dukanext-spec.XXXXXX"')
  assert(dir ~= "", "mktemp failed")
  return dir
end

function helpers.remove_tree(path)
  assert(path:find("dukanext%-spec"), "refusing to remove " .. path)
  os.execute("rm -rf '" .. path:gsub("'", "'\\''") .. "'")
end

-- The permission bits of a file in octal, e.g. "600".
function helpers.file_mode(path)
  return helpers.shell("stat -c %a '" .. path:gsub("'", "'\\''") .. "'")
end

-- The names in a folder, sorted, without . and ..
function helpers.dir_entries(path)
  local names = {}
  local out = helpers.shell("ls -A '" .. path:gsub("'", "'\\''") .. "'")
  for name in out:gmatch("[^\n]+") do names[#names + 1] = name end
  table.sort(names)
  return names
end

function helpers.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

-- The decoded JSON bodies of a collector's requests, in arrival order.
function helpers.request_bodies(collector)
  local bodies = {}
  for i, rec in ipairs(collector:requests()) do
    bodies[i] = cjson.decode(rec.body)
  end
  return bodies
end

-- Timing margins: how much slower than a plain build this run may be. The one place
-- that knows the run: memcheck (the interpreter runs under valgrind) 10, the sanitized
-- module or interpreter (ASan/UBSan) 3, and DUKANEXT_SLOW=<n> with n >= 2 n, any other
-- value 10 (the valgrind entry of ctest sets it to 1); the largest applies. Upper bounds
-- of a delay and lower bounds of a count or rate stretch by it; a pause that must be
-- honoured (a lower bound of a delay) never does.
local function run_slowness()
  local maps = helpers.read_file("/proc/self/maps") or ""
  local factor = 1
  if maps:find("vgpreload", 1, true) then factor = 10 end
  if maps:find("libasan", 1, true) or maps:find("libclang_rt.asan", 1, true)
    or cpath:find("/asan/", 1, true) then
    factor = math.max(factor, 3)
  end
  local slow = os.getenv("DUKANEXT_SLOW")
  local n = tonumber(slow or "")
  if n and n >= 2 then
    factor = math.max(factor, n)
  elseif slow and slow ~= "" then
    factor = math.max(factor, 10)
  end
  return factor
end
helpers.SLOW = run_slowness()

-- An upper bound of seconds on a delay, stretched by the run's slowness.
function helpers.within(seconds)
  return seconds * helpers.SLOW
end

-- A lower bound on a count or a rate that depends on the machine's speed (frames in a
-- second, pumps in a period), lowered by the run's slowness.
function helpers.at_least(n)
  return n / helpers.SLOW
end

-- Declares that the cases of this spec file which call pending(reason) cannot run on
-- the Lua running the suite when `applies` is true (say, OpenResty's cases anywhere but
-- LuaJIT). Under ctest (DUKANEXT_CTEST) any other pending fails the run:
-- spec/support/skips.lua, loaded by .busted, counts them.
function helpers.declare_skip(reason, applies)
  if applies then require("spec.support.skips").declare(reason) end
end

-- dn_posix (tests/posix_helper.c: fork, pipes, signals), built next to the module under
-- test (the plain build's for the sanitized one). Answers the module, or nil and why
-- it could not be loaded, package.loadlib's own error included.
function helpers.load_posix()
  local candidates = { cpath, (cpath:gsub("/asan/%?%.so$", "/?.so")) }
  if os.getenv("DN_POSIX_CPATH") then table.insert(candidates, 1, os.getenv("DN_POSIX_CPATH")) end
  local tried = {}
  for _, template in ipairs(candidates) do
    local path = template:gsub("%?", "dn_posix")
    if helpers.read_file(path) then
      local open, err = package.loadlib(path, "luaopen_dn_posix")
      if open then return open() end
      tried[#tried + 1] = path .. ": " .. tostring(err)
    else
      tried[#tried + 1] = path .. ": no such file"
    end
  end
  return nil, "dn_posix cannot be loaded (" .. table.concat(tried, "; ") .. ")"
end

function helpers.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a Lua script in a new process of the interpreter running the specs (the
-- sanitized host under ASan), with DUKANEXT_CPATH and the repository on the paths,
-- the script's arguments in `...`. env: extra "NAME=value" words for the shell;
-- wrap(command), when given, answers the shell command that runs it (unshare, ulimit).
-- Answers the exit code, stdout, stderr.
function helpers.run_lua(script, args, env, wrap)
  local path = os.tmpname()
  local out, err = path .. ".out", path .. ".err"
  local f = assert(io.open(path, "wb"))
  f:write(("package.path = %q .. package.path\n"):format("./?.lua;./spec/?.lua;"))
  f:write(("package.cpath = %q .. \";\" .. package.cpath\n"):format(cpath))
  f:write(script)
  f:close()
  local interpreter = (arg and arg[-1]) or "lua5.4"
  local words = {}
  for i, a in ipairs(args or {}) do words[i] = helpers.quote(a) end
  local command = table.concat(env or {}, " ") .. " DUKANEXT_CPATH=" .. helpers.quote(cpath)
    .. " " .. helpers.quote(interpreter) .. " " .. helpers.quote(path) .. " "
    .. table.concat(words, " ")
  if wrap then command = wrap(command) end
  local rc = helpers.shell(command .. " >" .. helpers.quote(out) .. " 2>" .. helpers.quote(err)
    .. "; echo $?")
  local stdout, stderr = helpers.read_file(out) or "", helpers.read_file(err) or ""
  os.remove(path)
  os.remove(out)
  os.remove(err)
  return tonumber(rc), stdout, stderr
end

return helpers
