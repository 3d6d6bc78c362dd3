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

-- Options that make retries quick enough for a test, merged under opts.
function helpers.fast(opts)
  local o = { retry_base = 0.02, retry_max = 0.2, timeout = 2, connect_timeout = 1 }
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

-- Timing margins. DUKANEXT_SLOW set (the valgrind run sets it to 1) stretches every
-- upper bound a spec puts on a delay: DUKANEXT_SLOW=<n> with n >= 2 by n, any other
-- value by 10. Lower bounds (a pause that must be honoured) never stretch.
do
  local slow = os.getenv("DUKANEXT_SLOW")
  local n = tonumber(slow or "")
  helpers.SLOW = (n and n >= 2 and n) or (slow and slow ~= "" and 10) or 1
end

-- An upper bound of seconds, stretched under DUKANEXT_SLOW.
function helpers.within(seconds)
  return seconds * helpers.SLOW
end

function helpers.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a Lua script in a new process of the interpreter running the specs (the
-- sanitized host under ASan), with DUKANEXT_CPATH and the repository on the paths,
-- the script's arguments in `...`. env: extra "NAME=value" words for the shell.
-- Answers the exit code, stdout, stderr.
function helpers.run_lua(script, args, env)
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
  local rc = helpers.shell(table.concat(env or {}, " ") .. " DUKANEXT_CPATH=" .. helpers.quote(cpath)
    .. " " .. helpers.quote(interpreter) .. " " .. helpers.quote(path) .. " "
    .. table.concat(words, " ") .. " >" .. helpers.quote(out) .. " 2>" .. helpers.quote(err)
    .. "; echo $?")
  local stdout, stderr = helpers.read_file(out) or "", helpers.read_file(err) or ""
  os.remove(path)
  os.remove(out)
  os.remove(err)
  return tonumber(rc), stdout, stderr
end

-- nginx (spec/90, spec/94) needs the LuaJIT build: $DUKANEXT_LUAJIT_CPATH, else the one beside the
-- module under test (ctest points DUKANEXT_CPATH at build/?.so, build/asan/?.so,
-- build/lua-5.x/?.so or build/lua-luajit/?.so), else fallback (examples/openresty/launch.lua's).
function helpers.luajit_cpath(fallback)
  local explicit = os.getenv("DUKANEXT_LUAJIT_CPATH")
  if explicit and explicit ~= "" then return explicit end
  local candidates = {}
  local under_test = os.getenv("DUKANEXT_CPATH")
  if under_test then
    local dir = under_test:match("^(.*)/%?%.so$")
    if dir then
      if dir:find("lua%-luajit$") then candidates[#candidates + 1] = under_test end
      candidates[#candidates + 1] = dir .. "/lua-luajit/?.so"
      candidates[#candidates + 1] = (dir:match("^(.*)/[^/]+$") or ".") .. "/lua-luajit/?.so"
    end
  end
  candidates[#candidates + 1] = fallback
  for _, c in ipairs(candidates) do
    if helpers.read_file((c:gsub("%?", "dukanext"))) then return c end
  end
end

return helpers
