-- api-chaos: random programs built from the whole API of dukanext, each run in a fresh
-- process of the sanitized interpreter against the collector. Any sanitizer report,
-- crash, hang or unexpected exit fails the run and prints the seed and the program.
--
-- Usage (from the repository root, as ctest runs it):
--   lua5.4 tests/api_chaos.lua <sanitized interpreter> <module cpath, e.g. build/asan/?.so>
-- Environment:
--   DUKANEXT_CHAOS_SECONDS  how long to go on (default 60; 900 with DUKANEXT_SLOW set)
--   DUKANEXT_CHAOS_SEED     run this one seed only, and print its program
--   DUKANEXT_CHAOS_FIRST    the first seed of a run (default: from the clock)
--   DUKANEXT_CHAOS_KEEP_GOING=1  report every failing seed instead of stopping at one
package.path = "./?.lua;./spec/?.lua;" .. package.path
local collector_lib = require("spec.support.collector")
local socket = require("socket")

local host, cpath = arg[1], arg[2]
if not host or not cpath then
  io.stderr:write("usage: api_chaos.lua <sanitized lua host> <module cpath>\n")
  os.exit(2)
end
-- Programs run in folders of their own.
local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return (os.getenv("PWD") or ".") .. "/" .. path
end
host, cpath = absolute(host), absolute(cpath)
local slow = os.getenv("DUKANEXT_SLOW")
local slow_run = slow ~= nil and slow ~= ""
local seconds = tonumber(os.getenv("DUKANEXT_CHAOS_SECONDS") or "") or (slow_run and 900 or 60)
local only_seed = tonumber(os.getenv("DUKANEXT_CHAOS_SEED") or "")
local keep_going = os.getenv("DUKANEXT_CHAOS_KEEP_GOING") == "1"
-- A program runs in a second or two; one that takes this long hangs.
local PROGRAM_LIMIT = slow_run and 300 or 60

-- Park-Miller: the same sequence on every Lua, in doubles without rounding.
local function new_random(seed)
  local state = seed % 2147483646 + 1
  return function(n)
    state = state * 16807 % 2147483647
    return state % n + 1
  end
end

-- ---- the program's own runtime: callbacks decide what to do with the same generator ----

local PRELUDE = [=[
-- api-chaos program, seed %d
local URL, DIR = ...
local REFUSED = "http://127.0.0.1:1/x"
package.cpath = os.getenv("DUKANEXT_CPATH") .. ";" .. package.cpath
local dn
local keepers, clients = {}, {}
local current -- the client whose method the program called last
local state = %d %% 2147483646 + 1
local function R(n)
  state = state * 16807 %% 2147483647
  return state %% n + 1
end
local function guard(fn) return setmetatable({}, { __gc = fn }) end
local function keep(x) keepers[#keepers + 1] = x end
local function step(f) pcall(f) end
-- A client made earlier, or nil.
local function C()
  local c = clients[R(#clients + 1)]
  return c or nil
end
-- A method on a random client, or the module function of the same name.
local function call(method, ...)
  local c = C()
  if c and R(3) > 1 then
    current = c
    return c[method](c, ...)
  end
  return dn[method](...)
end
local function cycle()
  local t = { n = 1 }
  t.self = t
  return t
end
-- What a hostile callback does: one of these, chosen when it runs.
local ACTIONS = {
  function() error("chaos callback") end,
  function() coroutine.yield("chaos") end,
  function() return {} end,
  function() return 42 end,
  function() return string.rep("x", R(5000)) end,
  function() return call("emit", "inner", { n = R(9) }) end,
  function() return dn.pump() end,
  function() return call("flush", 0.01 * R(3)) end,
  function() local c = C(); if c then c:close() end end,
  function() local c = C(); if c then getmetatable(c).__gc(c) end end,
  function() local c = C(); if c then debug.getmetatable(c).__gc(c) end end,
  -- The client whose call is running, most likely the one this callback belongs to.
  function() if current then getmetatable(current).__gc(current) end end,
  function() if current then getmetatable(current).__gc(current) end end,
  function() if current then getmetatable(current).__gc(current) end end,
  function() if current then debug.getmetatable(current).__gc(current) end end,
  function() if current then debug.getmetatable(current).__gc(current) end end,
  function() if current then current:close() end end,
  function() collectgarbage() end,
  function() clients[R(#clients + 1)] = false end,
  function() return call("get_user_id") end,
  function() return call("stats") end,
  function() return nil end,
}
local function act() return ACTIONS[R(#ACTIONS)]() end
local function hostile_storage()
  local data = {}
  return {
    get = function(k) if R(2) == 1 then return act() end return data[k] end,
    set = function(k, v) if R(2) == 1 then return act() end data[k] = v end,
  }
end
local function make_storage(kind)
  if kind == 1 then return dn.memory_storage() end
  if kind == 2 then return dn.file_storage(DIR .. "/ids" .. R(3) .. ".json") end
  return hostile_storage()
end
local function on_error_callback()
  return function(err) if R(2) == 1 then return act() end return err.code end
end
-- Options with some of them inherited through __index, as the defaults idiom does.
local function opts(own, inherited)
  if next(inherited) or R(4) == 1 then return setmetatable(own, { __index = inherited }) end
  return own
end
]=]

-- ---- the generator: literal steps, each a piece of Lua ----

local function pick(R, list) return list[R(#list)] end

-- Values each option may get; those after "|" are wrong, and given one time in four,
-- so that most clients are made and used, and some options are refused.
local OPTION_VALUES = {
  endpoint = { "URL", "REFUSED", "|", '"gopher://127.0.0.1/x"', '"http://user:secret@127.0.0.1:1/x"',
               '"127.0.0.1:1/x"', "42" },
  max_retries = { "0", "1", "2", "|", "1e12", "-1" },
  retry_base = { "0", "0.001", "0.01", "|", "-1" },
  retry_max = { "0.01", "0.05", "|", "-5" },
  max_in_flight = { "1", "2", "4", "|", "0" },
  timeout = { "0.2", "0.5", "1", "|" },
  connect_timeout = { "0.1", "0.5", "|" },
  max_queue = { "1", "2", "50", "|" },
  headers = { '{ ["X-Shop"] = "eu-1" }', "{}", "|", '{ ["X-Shop"] = "a\\r\\nX-Injected: yes" }', '"nope"',
              '{ [1] = "x" }' },
  http_version = { '"1.1"', '"default"', "|", '"bogus"', "{}" },
  spool_sync = { '"always"', "|", '"bogus"', "{}" },
  storage = { "make_storage(1)", "make_storage(2)", "make_storage(3)", "make_storage(3)", "|", "42" },
  on_error = { "on_error_callback()", "|", '"not a function"' },
  session_timeout = { "0.001", "10", "|", "-1" },
  onError = { "|", "print" },
  url = { "|", "URL" },
}
local OPTION_NAMES = {}
for name in pairs(OPTION_VALUES) do OPTION_NAMES[#OPTION_NAMES + 1] = name end
table.sort(OPTION_NAMES)

local function option_value(R, name)
  local values, bar = OPTION_VALUES[name], 1
  while values[bar] ~= "|" do bar = bar + 1 end
  if bar > 1 and (bar == #values or R(4) > 1) then return values[R(bar - 1)] end
  return values[bar + R(#values - bar)]
end

local function gen_options(R)
  local own, inherited = { "endpoint = " .. option_value(R, "endpoint") }, {}
  for _, name in ipairs(OPTION_NAMES) do
    local roll = R(10)
    if name == "endpoint" then
      if roll == 1 then inherited[#inherited + 1] = "endpoint = " .. option_value(R, "endpoint") end
    elseif (name == "storage" or name == "on_error") and roll <= 5 then
      -- Callbacks are where programs turn on dukanext: most clients get one.
      local list = roll <= 3 and own or inherited
      list[#list + 1] = name .. " = " .. option_value(R, name)
    elseif roll == 1 or (roll == 2 and R(4) == 1) then
      own[#own + 1] = name .. " = " .. option_value(R, name)
    elseif roll == 3 then
      inherited[#inherited + 1] = name .. " = " .. option_value(R, name)
    end
  end
  return ("opts({ %s }, { %s })"):format(table.concat(own, ", "), table.concat(inherited, ", "))
end

local METADATA = { "nil", "{}", "{ n = R(100) }", '{ url = "/p" .. R(9) }', "{ items = { { price = print } } }",
                   "cycle()", '"text"', "{ 1, 2 }", "{ deep = { deeper = { x = 0/0 } } }" }
local FIELDS = { "nil", "nil", "{ storage = make_storage(R(3)) }", '{ referer = "x" }', '{ userAgent = "ua" }',
                 '{ clientIp = "10.0.0." .. R(9) }', '{ customersId = "c" .. R(9) }', "42" }
local FINAL_CALLS = { "dn.flush(0.05)", "dn.pump()", "dn.next_timeout()", 'dn.emit("fin", {})',
                      "dn.new({ endpoint = URL })", "dn.configure({ endpoint = URL })", "dn.stats()",
                      'call("flush", 0.01)', "dn.get_user_id()", "dn.poll_fd()" }

local STEPS
STEPS = {
  function(R) return "clients[#clients + 1] = dn.new(" .. gen_options(R) .. ")" end,
  function(R) return "clients[#clients + 1] = dn.new(" .. gen_options(R) .. ")" end,
  function(R) return "dn.configure(" .. gen_options(R) .. ")" end,
  function(R)
    return ('call("emit", "e%d", %s, %s)'):format(R(9), pick(R, METADATA), pick(R, FIELDS))
  end,
  function(R)
    return ('call("emit", "e%d", %s, %s)'):format(R(9), pick(R, METADATA), pick(R, FIELDS))
  end,
  function(R)
    return ('call("emit", "e%d", %s, %s)'):format(R(9), pick(R, METADATA), pick(R, FIELDS))
  end,
  -- A client whose callbacks turn on it, used at once.
  function(R)
    return ("local c = dn.new(opts({ endpoint = %s, storage = make_storage(3), on_error = "
      .. "on_error_callback(), max_retries = %d }, {})); clients[#clients + 1] = c; current = c; "
      .. 'c:emit("turn", { n = %d }); c:%s'):format(pick(R, { "URL", "REFUSED" }), R(3) - 1, R(9),
        pick(R, { "flush(0.05)", "get_user_id()", "get_session_id()", 'emit("again")' }))
  end,
  function() return "dn.pump()" end,
  function(R) return ('call("flush", %s)'):format(pick(R, { "0", "0.01", "0.1", "0.3" })) end,
  function() return "dn.next_timeout(); dn.poll_fd()" end,
  function(R) return ('call("%s")'):format(pick(R, { "stats", "get_user_id", "get_session_id", "reset" })) end,
  function(R) return ('call("get_user_id", make_storage(%d))'):format(R(3)) end,
  function(R) return ('call("identify", "customer-%d")'):format(R(9)) end,
  function() return "local c = C(); if c then c:close() end" end,
  function() return "clients[R(#clients + 1)] = false" end,
  function(R) return pick(R, { 'collectgarbage()', 'collectgarbage("step")', "collectgarbage(); collectgarbage()" }) end,
  -- A finalizer, kept until the state closes or left for the collector.
  function(R)
    return ("%s(guard(function() %s end))"):format(pick(R, { "keep", "local _ = " }), pick(R, FINAL_CALLS))
  end,
  -- A finalizer older than the storage it uses: both may be collected together.
  function(R)
    return ("local st; local g = guard(function() %s end); st = make_storage(%d); %s")
      :format(pick(R, { 'call("emit", "bye", {}, { storage = st })', 'st.get("dn_user_id")',
                        'call("get_user_id", st)', 'st.set("k", "v")' }),
        R(3), pick(R, { "", "keep(st)", "st, g = nil, nil; collectgarbage()" }))
  end,
  -- Metatable tricks.
  function(R)
    return pick(R, {
      "local c = C(); if c then getmetatable(c).__gc(c) end",
      "local c = C(); if c then debug.getmetatable(c).__gc(c) end",
      "local c = C(); if c then setmetatable(c, {}) end",
      'local st = make_storage(2); local _, box = debug.getupvalue(st.get, 1); '
        .. 'debug.getmetatable(box).__gc(box); st.set("k", "v")',
    })
  end,
  -- The same inside a coroutine (callbacks may then try to yield across the module).
  function(R)
    local inner = STEPS[R(16)](R)
    return ("coroutine.wrap(function() %s end)()"):format(inner)
  end,
}

local function generate(seed)
  local R = new_random(seed)
  local lines = { PRELUDE:format(seed, seed) }
  for _ = 1, R(3) - 1 do
    lines[#lines + 1] = ("keep(guard(function() %s end))"):format(pick(R, FINAL_CALLS))
  end
  lines[#lines + 1] = 'dn = require("dukanext")'
  for _ = 1, 6 + R(20) do
    lines[#lines + 1] = ("step(function() %s end)"):format(STEPS[R(#STEPS)](R))
  end
  lines[#lines + 1] = 'print("chaos-ok")'
  return table.concat(lines, "\n") .. "\n"
end

-- ---- running programs ----

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local data = f:read("*a")
  f:close()
  return data
end

local function shell(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return (out:gsub("\n$", ""))
end

-- Answers nil when the program ran clean, else why not and its stderr.
local function run(seed, url)
  local dir = shell('mktemp -d "${TMPDIR:-/tmp}/dukanext-chaos.XXXXXX"')
  local program = dir .. "/program.lua"
  local f = assert(io.open(program, "wb"))
  f:write(generate(seed))
  f:close()
  local rc = tonumber(shell("cd " .. quote(dir) .. " && DUKANEXT_CPATH=" .. quote(cpath)
    .. " ASAN_OPTIONS=detect_leaks=1:halt_on_error=1"
    .. " UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
    .. " timeout -s KILL " .. PROGRAM_LIMIT .. " " .. quote(host) .. " program.lua "
    .. quote(url) .. " " .. quote(dir) .. " >out 2>err; echo $?"))
  local out, err = read_all(dir .. "/out"), read_all(dir .. "/err")
  os.execute("rm -rf " .. quote(dir))
  local why
  if err:find("Sanitizer") or err:find("runtime error:") then
    why = "a sanitizer report"
  elseif rc == 137 then
    why = "no end within " .. PROGRAM_LIMIT .. " s"
  elseif rc ~= 0 then
    why = "exit status " .. tostring(rc)
  elseif not out:find("chaos-ok\n", 1, true) then
    why = "the program stopped before its end"
  end
  return why, err
end

local collector = collector_lib.start({})
local function finish(code)
  collector:stop()
  os.exit(code)
end

if only_seed then
  io.write(generate(only_seed))
  local why, err = run(only_seed, collector.url)
  print(why and ("seed " .. only_seed .. " fails: " .. why .. "\n" .. err) or ("seed " .. only_seed .. " ran clean"))
  finish(why and 1 or 0)
end

local first = tonumber(os.getenv("DUKANEXT_CHAOS_FIRST") or "") or (os.time() % 1000000) * 1000
local deadline = socket.gettime() + seconds
local seed, ran, failed = first, 0, 0
while socket.gettime() < deadline do
  local why, err = run(seed, collector.url)
  ran = ran + 1
  if why then
    failed = failed + 1
    print(("api-chaos: seed %d fails (%s); rerun it alone with DUKANEXT_CHAOS_SEED=%d")
      :format(seed, why, seed))
    if not keep_going then
      print("---- program ----")
      io.write(generate(seed))
      print("---- its stderr ----")
      io.write(err)
      finish(1)
    end
    -- The first lines that name a frame of ours say which defect it is.
    local frames = {}
    for line in err:gmatch("[^\n]+") do
      if #frames < 3 and (line:find("/src/", 1, true) or line:find("runtime error", 1, true)) then
        frames[#frames + 1] = "    " .. line:gsub("^%s+", "")
      end
    end
    print(table.concat(frames, "\n"))
  end
  seed = seed + 1
end
print(("api-chaos: %d programs from seed %d, %d failed"):format(ran, first, failed))
finish(failed > 0 and 1 or 0)
