-- The Windows tests: dukanext.dll in lua.exe or luajit.exe under Wine, against the
-- bundled collector (nginx on 127.0.0.1 of this machine, which Windows processes reach).
-- busted does not run there, so this runner (Linux side, Lua 5.4 with LuaSocket) starts
-- the collector, runs each case's steps as Windows processes (tests/windows/child.lua),
-- checks what arrived, prints one line per case and exits non-zero if one failed.
--
--   lua5.4 tests/windows/run.lua <lua.exe or luajit.exe> <folder of dukanext.dll>
--
-- Environment: WINEPREFIX (a folder of the build tree; made on first use), DN_WINE
-- (the wine64 loader; default: wine64 on PATH, else /usr/lib/wine/wine64).
package.path = "./?.lua;" .. package.path
local socket = require("socket")
local cjson = require("cjson")
local collector_lib = require("spec.support.collector")

local lua_exe, module_dir = arg[1], arg[2]
if not (lua_exe and module_dir) then
  io.stderr:write("usage: run.lua <lua.exe or luajit.exe> <folder of dukanext.dll>\n")
  os.exit(2)
end
local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return assert(io.popen("pwd")):read("*l") .. "/" .. path
end
lua_exe, module_dir = absolute(lua_exe), absolute(module_dir)
local prefix = lua_exe:match("^(.*)/bin/[^/]+$")
local lua_version = lua_exe:find("luajit", 1, true) and "5.1" or "5.4"
local child_script = absolute("tests/windows/child.lua")

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function shell(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

local function wine_loader()
  local env = os.getenv("DN_WINE")
  if env and env ~= "" then return env end
  local found = shell("command -v wine64 || true"):gsub("%s+$", "")
  return found ~= "" and found or "/usr/lib/wine/wine64"
end
local WINE = wine_loader()

-- A Linux path as Windows sees it: Wine's drive Z: is the root of this machine.
local function windows_path(path)
  return "Z:" .. path:gsub("/", "\\")
end

-- The module and lua-cjson for this Lua; libcurl-4.dll and the runtime DLLs are found
-- beside the interpreter.
local cpath = windows_path(module_dir .. "/?.dll") .. ";"
  .. windows_path(prefix .. "/lib/lua/" .. lua_version .. "/?.dll")
local ENV = table.concat({
  "WINEDEBUG=-all",
  "LUA_CPATH=" .. quote(cpath),
  "LUA_CPATH_5_4=" .. quote(cpath),
}, " ")

local function child_command(step, endpoint, folder, count, tag, ca_file)
  local words = { step, endpoint or "-", folder and windows_path(folder) or "-", tostring(count or 1),
    tag or "-", ca_file and windows_path(ca_file) or "-" }
  for i, w in ipairs(words) do words[i] = quote(w) end
  return ENV .. " " .. quote(WINE) .. " " .. quote(lua_exe) .. " " .. quote(child_script) .. " "
    .. table.concat(words, " ")
end

-- key=value lines of a child's output (the last value of a key wins; "acked" lines
-- are kept in order in .acked).
local function parse(out)
  local r = { acked = {}, raw = out }
  for line in out:gmatch("[^\r\n]+") do
    local k, v = line:match("^([%w_]+)=(.*)$")
    if k == "acked" then
      r.acked[#r.acked + 1] = tonumber(v)
    elseif k then
      r[k] = v
    end
  end
  return r
end

local tmp_root = shell('mktemp -d "${TMPDIR:-/tmp}/dukanext-windows.XXXXXX"'):gsub("%s+$", "")

-- Runs one step to its end; answers its parsed output and the seconds it took. The
-- output goes through a file, not a pipe: Wine's helper processes (winedevice.exe)
-- inherit the descriptors and would hold a pipe open long after the step ended.
local function run_child(...)
  local started = socket.gettime()
  local file = tmp_root .. "/step.out"
  os.execute(child_command(...) .. " >" .. quote(file) .. " 2>&1; echo rc=$? >>" .. quote(file))
  local out = read_file(file) or ""
  local r = parse(out)
  r.seconds = socket.gettime() - started
  if r.rc ~= "0" or r.done == nil then
    error("the Windows process failed:\n" .. out, 2)
  end
  return r
end

-- Starts one step in the background; answers its pid and output file.
local function spawn_child(out_file, ...)
  local pid = shell(child_command(...) .. " >" .. quote(out_file) .. " 2>&1 </dev/null & echo $!")
  return assert(tonumber(pid), "no pid"), out_file
end

local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end

local function wait_until(seconds, pred)
  local deadline = socket.gettime() + seconds
  repeat
    local v = pred()
    if v then return v end
    socket.sleep(0.05)
  until socket.gettime() > deadline
  return pred()
end

local function tmpdir(name)
  local dir = tmp_root .. "/" .. name
  assert(os.execute("mkdir -p " .. quote(dir)))
  return dir
end

local function check(cond, message, ...)
  if not cond then error(string.format(message, ...), 2) end
end

local function equal(want, got, what)
  if want ~= got then
    error(("%s: want %s, got %s"):format(what, tostring(want), tostring(got)), 2)
  end
end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local USER_ID = UUID:sub(1, -2) .. "%-%d+$"

local collector

-- The requests for events named `event`, in arrival order, bodies decoded.
local function requests_for(event)
  local list = {}
  for _, rec in ipairs(collector:requests()) do
    local ok, body = pcall(cjson.decode, rec.body)
    if ok and type(body) == "table" and body.event == event then
      rec.decoded = body
      list[#list + 1] = rec
    end
  end
  return list
end

local function wait_requests_for(event, n, seconds)
  return wait_until(seconds or 10, function()
    local list = requests_for(event)
    return #list >= n and list
  end) or requests_for(event)
end

local cases = {}
local function case(name, fn) cases[#cases + 1] = { name = name, fn = fn } end

case("ids kept in file_storage across two processes", function()
  local dir = tmpdir("ids")
  local first = run_child("ids", nil, dir)
  local second = run_child("ids", nil, dir)
  check(first.user and first.user:match(USER_ID), "user id %s", tostring(first.user))
  equal(first.user, second.user, "user id of the second process")
  equal(first.session, second.session, "session id of the second process")
  local stored = cjson.decode((assert(read_file(dir .. "/ids.json"), "no ids.json")))
  equal(first.user, stored.dn_user_id, "dn_user_id in ids.json")
end)

case("a UTF-8 non-ASCII folder (José-日本) for file_storage and spool", function()
  local dir = tmpdir("utf8")
  local name = "José-日本"
  -- file_storage wants its folder to exist; the spool makes its own inside it.
  shell("mkdir " .. quote(dir .. "/" .. name))
  local first = run_child("utf8", collector.url, dir, 3, "windows_utf8")
  equal("true", first.flushed, "flush")
  equal("3", first.sent, "sent")
  equal("", first.errors, "errors")
  local listing = shell("ls -A " .. quote(dir)):gsub("%s+$", "")
  equal(name, listing, "the only folder under " .. dir)
  local stored = cjson.decode((assert(read_file(dir .. "/" .. name .. "/ids.json"), "no ids.json")))
  equal(first.user, stored.dn_user_id, "dn_user_id in " .. name .. "/ids.json")
  check(shell("test -d " .. quote(dir .. "/" .. name .. "/spool") .. " && echo yes"):find("yes"),
    "no spool folder in %s", name)
  local second = run_child("utf8", collector.url, dir, 2, "windows_utf8")
  equal(first.user, second.user, "user id read back by a second process")
  equal(5, #wait_requests_for("windows_utf8", 5), "events at the collector")
end)

case("delivery of 200 events: exact body, Idempotency-Key, X-Dukanext-Attempt", function()
  local n = 200
  local r = run_child("deliver", collector.url, nil, n, "windows_many")
  equal("true", r.flushed, "flush")
  equal(tostring(n), r.sent, "sent")
  local list = wait_requests_for("windows_many", n)
  equal(n, #list, "requests at the collector")
  local keys, seen = {}, {}
  for _, rec in ipairs(list) do
    local i = math.tointeger(rec.decoded.metadata.i)
    local want = ('{"userId":"%s","sessionId":"%s","sessionStartPage":null,"referrerUrl":null,'
      .. '"hasCustomerAccount":false,"customersId":null,"event":"windows_many","metadata":{"i":%d}}')
      :format(r.user, r.session, i)
    equal(want, rec.body, "body of event " .. i)
    equal(200, rec.status, "status")
    equal("1", rec.all_headers["x-dukanext-attempt"], "X-Dukanext-Attempt")
    local key = rec.all_headers["idempotency-key"]
    check(key and key:match(UUID), "Idempotency-Key %s", tostring(key))
    check(not keys[key], "Idempotency-Key %s used twice", key)
    check(not seen[i], "event %d sent twice", i)
    keys[key], seen[i] = true, true
  end
end)

case("retry after 503, then delivery", function()
  collector:plan({ { status = 503 } })
  local r = run_child("deliver", collector.url, nil, 1, "windows_retry")
  equal("true", r.flushed, "flush")
  equal("1", r.sent, "sent")
  equal("1", r.retries, "retries")
  local list = wait_requests_for("windows_retry", 2)
  equal(2, #list, "requests")
  equal(503, list[1].status, "first answer")
  equal(200, list[2].status, "second answer")
  equal("1", list[1].all_headers["x-dukanext-attempt"], "first attempt header")
  equal("2", list[2].all_headers["x-dukanext-attempt"], "second attempt header")
  equal(list[1].all_headers["idempotency-key"], list[2].all_headers["idempotency-key"], "key of the retry")
  equal(list[1].body, list[2].body, "body of the retry")
end)

case("poll_fd() is nil; next_timeout() says when a pump is due", function()
  local r = run_child("host_loop", collector.url)
  equal("nil", r.poll_fd, "poll_fd()")
  equal("nil", r.idle_timeout, "next_timeout() with nothing pending")
  equal(0, tonumber(r.timeout_after_emit), "next_timeout() after emit")
  equal("1", r.sent, "sent")
  equal("nil", r.timeout_after_flush, "next_timeout() after flush")
end)

case("flush(1) keeps its deadline against a server that accepts and never answers", function()
  -- The kernel completes the handshake for the listening socket; nothing reads or answers.
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  local r = run_child("deadline", ("http://127.0.0.1:%d/access/api/v1/analytics"):format(port))
  server:close()
  equal("nil TIMEOUT 1", r.result, "flush(1)")
  local waited = tonumber(r.waited)
  check(waited >= 0.9 and waited <= 5, "flush(1) took %.3f s", waited)
  -- The process then ends at once: closing the state does not wait for the answer.
  check(r.seconds < 30, "the process took %.1f s", r.seconds)
end)

-- Wine's Schannel does not check a server's certificate on its own (what curl asks of
-- it when no ca_file is given), so the case gives ca_file: curl then checks the chain
-- against it and the name, with CertGetCertificateChain, which Wine does. curl 7.88's
-- Schannel matches DNS names only, so the URL says localhost, not 127.0.0.1.
case("TLS through Schannel with ca_file: the collector's CA trusted, another CA refused unless insecure", function()
  local url = collector.tls_url:gsub("//127%.0%.0%.1:", "//localhost:")
  local trusted = run_child("tls", url, nil, 1, "windows_tls", collector.ca_file)
  equal("", trusted.errors, "errors with the collector's CA")
  equal("1", trusted.sent, "sent with the collector's CA")
  equal(1, #wait_requests_for("windows_tls", 1), "events over TLS")

  local other_ca = tmp_root .. "/other-ca.pem"
  assert(os.execute("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    .. " -days 1 -subj /CN=another-ca -keyout " .. quote(tmp_root .. "/other-ca.key")
    .. " -out " .. quote(other_ca) .. " >/dev/null 2>&1"))
  local refused = run_child("tls", url, nil, 1, "windows_tls_untrusted", other_ca)
  equal("1", refused.failed, "failed with another CA")
  equal("TLS_ERROR", refused.errors, "error with another CA")
  equal(0, #requests_for("windows_tls_untrusted"), "events sent to an untrusted server")

  -- insecure = true: verification off, asked for in so many words.
  local insecure = run_child("tls", url, nil, 0, "windows_tls_insecure", other_ca)
  equal("1", insecure.sent, "sent with insecure = true")
  equal(1, #wait_requests_for("windows_tls_insecure", 1), "events with insecure = true")
end)

case("the spool survives kill -9 of the process; the next one replays every acknowledged event", function()
  local dir = tmpdir("kill")
  collector:plan({}, { delay = 0.05 })
  local out = tmp_root .. "/kill.out"
  local pid = spawn_child(out, "spool_writer", collector.url, dir, 1, "windows_kill")
  local enough = wait_until(60, function()
    return #parse(read_file(out) or "").acked >= 200
  end)
  os.execute("kill -9 " .. pid)
  check(wait_until(10, function() return not alive(pid) end), "process %d still alive", pid)
  check(enough, "the writer acknowledged too little:\n%s", read_file(out) or "")
  local acked = parse(read_file(out)).acked
  socket.sleep(0.5)
  equal(#acked, #parse(read_file(out)).acked, "events acknowledged after the kill")
  local last = acked[#acked]
  collector:plan({}, nil)
  local r = run_child("spool", collector.url, dir, 0)
  equal("true", r.flushed, "flush of the replay")
  check(tonumber(r.replayed) > 0, "nothing replayed (sent before the kill: all?)")
  local keys_of = {}
  for _, rec in ipairs(requests_for("windows_kill")) do
    if rec.status == 200 then
      local i = math.tointeger(rec.decoded.metadata.i)
      local key = rec.all_headers["idempotency-key"]
      check(keys_of[i] == nil or keys_of[i] == key, "event %d arrived under two keys", i)
      keys_of[i] = key
      check(i <= last + 1, "event %d arrived, but only %d were emitted", i, last + 1)
    end
  end
  for i = 1, last do check(keys_of[i], "acknowledged event %d of %d was lost", i, last) end
  io.stdout:write(("#   %d acknowledged before the kill, %s replayed, 0 lost\n"):format(last, r.replayed))
end)

case("two processes sharing a spool folder", function()
  local dir = tmpdir("shared")
  local n = 100
  local a = spawn_child(tmp_root .. "/a.out", "spool", collector.url, dir, n, "windows_share_a")
  local b = spawn_child(tmp_root .. "/b.out", "spool", collector.url, dir, n, "windows_share_b")
  check(wait_until(90, function() return not alive(a) and not alive(b) end), "the processes did not end")
  for _, tag in ipairs({ "a", "b" }) do
    local r = parse(read_file(tmp_root .. "/" .. tag .. ".out") or "")
    equal("true", r.flushed, "flush of process " .. tag .. "\n" .. r.raw)
    equal(tostring(n), r.sent, "sent by process " .. tag)
    equal("0", r.replayed, "replayed by process " .. tag)
    local list = wait_requests_for("windows_share_" .. tag, n)
    equal(n, #list, "events of process " .. tag)
    local keys = {}
    for _, rec in ipairs(list) do
      local key = rec.all_headers["idempotency-key"]
      check(not keys[key], "event %s of process %s sent twice", key, tag)
      keys[key] = true
    end
  end
  -- Each client removed its own files once nothing was pending.
  equal("", shell("ls -A " .. quote(dir)):gsub("%s+$", ""), "files left in the spool folder")
end)

-- Run -----------------------------------------------------------------------------

collector = collector_lib.start({ tls = true })
-- One wineserver for the whole run, so each process starts quickly.
local WINESERVER = WINE:gsub("wine64$", "wineserver")
os.execute(ENV .. " " .. quote(WINESERVER) .. " -p 60 >/dev/null 2>&1 </dev/null")

local failed = 0
for i, c in ipairs(cases) do
  collector:plan({}, nil)
  local started = socket.gettime()
  local ok, err = pcall(c.fn)
  local took = socket.gettime() - started
  if ok then
    io.stdout:write(("ok %d - %s (%.1f s)\n"):format(i, c.name, took))
  else
    failed = failed + 1
    io.stdout:write(("not ok %d - %s\n"):format(i, c.name))
    io.stdout:write("#   " .. tostring(err):gsub("\n", "\n#   ") .. "\n")
  end
  io.stdout:flush()
end
collector:stop()
-- Ends this prefix's Wine processes (the wineserver kept alive above).
os.execute(ENV .. " " .. quote(WINESERVER) .. " -k >/dev/null 2>&1")
os.execute("rm -rf " .. quote(tmp_root))
io.stdout:write(("%d of %d Windows cases passed (%s)\n"):format(#cases - failed, #cases, lua_exe))
os.exit(failed == 0 and 0 or 1)
