-- The durable spool (issue 6), against the real collector: events that emit accepted
-- survive a SIGKILL at any moment and arrive after a restart, each under the
-- Idempotency-Key of its first attempt, and nothing arrives that was never emitted;
-- torn and corrupt records are skipped, never sent; a folder that cannot be written
-- and a full disk answer SPOOL_ERROR while the events still go out from memory; the
-- size bound answers QUEUE_FULL; processes sharing a folder write their own files and
-- adopt those of processes that are gone, never those of one that runs.
--
-- DUKANEXT_SLOW set: more kill runs (DUKANEXT_SPOOL_RUNS=<n> sets their number).
-- DUKANEXT_SPOOL_FIGURES set: each killed process is described on stderr.
local helpers = require("spec.helpers")
local cjson = require("cjson")
local socket = require("socket")

local dn = helpers.dn()
local within = helpers.within

local slow = os.getenv("DUKANEXT_SLOW")
local heavy = slow ~= nil and slow ~= ""
local KILL_RUNS = tonumber(os.getenv("DUKANEXT_SPOOL_RUNS") or "") or (heavy and 100 or 20)
-- Longest wait before the SIGKILL, in ms: long enough for hundreds of synced appends.
local KILL_DELAY_MS = heavy and 600 or 250

local to_integer = math.tointeger or function(x) return x end

local function integer(x)
  return type(x) == "number" and (to_integer(x) or x) or x
end

local posix, posix_error = helpers.load_posix()

-- An endpoint where nothing listens: connections are refused, events stay pending.
local function down_url()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return ("http://127.0.0.1:%d/access/api/v1/analytics"):format(port)
end

local function names_ending(dir, suffix)
  local list = {}
  for _, name in ipairs(helpers.dir_entries(dir)) do
    if name:sub(-#suffix) == suffix then list[#list + 1] = name end
  end
  return list
end

-- "<pid>" of each writer with a lock file in dir.
local function lock_pids(dir)
  local pids = {}
  for _, name in ipairs(names_ending(dir, ".lock")) do
    pids[#pids + 1] = tonumber(name:match("^(%d+)%-%x+%.lock$"))
  end
  table.sort(pids)
  return pids
end

-- Files in dir whose writer has pid `pid`.
local function files_of(dir, pid)
  local list = {}
  for _, name in ipairs(helpers.dir_entries(dir)) do
    if name:match("^(%d+)%-") == tostring(pid) then list[#list + 1] = name end
  end
  return list
end

-- os.execute's success, in every Lua (5.1 answers a status number).
local function execute_ok(command)
  local a, _, code = os.execute(command)
  if type(a) == "number" then return a == 0 end
  return a == true and (code == nil or code == 0)
end

local function write_file(path, data, mode)
  local f = assert(io.open(path, mode or "wb"))
  f:write(data)
  f:close()
end

-- Forks; the child runs fn() and leaves with _exit (never through busted): 0 when fn
-- returned, 1 when it raised (the error goes to `log_path` when given).
local function fork(fn, log_path)
  io.stdout:flush()
  io.stderr:flush()
  local pid = assert(posix.fork())
  if pid == 0 then
    local ok, err = pcall(fn)
    if not ok and log_path then
      local f = io.open(log_path, "ab")
      if f then
        f:write("error ", tostring(err), "\n")
        f:close()
      end
    end
    posix._exit(ok and 0 or 1)
  end
  return pid
end

-- Runs a Lua script in a new process of the interpreter running the specs, through a
-- shell command made by wrap(command) (ulimit, unshare, ...). Answers the script's
-- exit code and everything it printed (stdout and stderr, read through a pipe so that
-- a file size limit does not apply to it).
local function run_wrapped(script, args, wrap)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  local cpath = os.getenv("DUKANEXT_CPATH") or "./build/?.so"
  f:write(("package.path = %q .. package.path\n"):format("./?.lua;./spec/?.lua;"))
  f:write(("package.cpath = %q .. \";\" .. package.cpath\n"):format(cpath))
  f:write(script)
  f:close()
  local interpreter = (arg and arg[-1]) or "lua5.4"
  local words = { "DUKANEXT_CPATH=" .. helpers.quote(cpath), helpers.quote(interpreter), helpers.quote(path) }
  for _, a in ipairs(args or {}) do words[#words + 1] = helpers.quote(a) end
  local p = assert(io.popen("(" .. wrap(table.concat(words, " ")) .. "; echo \"rc=$?\") 2>&1"))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  local text, rc = out:match("^(.*)rc=(%d+)%s*$")
  return tonumber(rc), text or out
end

-- key=value lines printed by a child script.
local function parse_numbers(out)
  local r = {}
  for k, v in out:gmatch("([%w_]+)=([^\n]*)\n") do r[k] = tonumber(v) or v end
  return r
end

local function pad_for(n)
  return string.rep(string.char(97 + n % 26), n % 61)
end

describe("the durable spool", function()
  local c, base
  local clients = {}

  local function new_client(opts)
    local cl = dn.new(helpers.fast(opts))
    clients[#clients + 1] = cl
    return cl
  end

  -- A fresh spool folder path (not yet created) under a fresh temporary folder.
  local function spool_dir(name)
    return base .. "/" .. (name or "spool") .. "-" .. tostring(math.random(1, 1e9))
  end

  -- Every request the collector logged, decoded: body (nil when not JSON), status,
  -- key. Garbage is reported by the callers that care.
  local function requests()
    local list = {}
    for i, r in ipairs(c:requests()) do
      local ok, body = pcall(cjson.decode, r.body or "")
      list[i] = {
        body = ok and type(body) == "table" and body or nil,
        raw = r.body,
        status = r.status,
        key = r.headers.idempotency_key,
        attempt = r.headers.attempt,
      }
    end
    return list
  end

  local function delivered(r)
    return r.status >= 200 and r.status < 300
  end

  -- metadata.n of each delivered request of event `name`, in arrival order.
  local function delivered_ns(name)
    local ns = {}
    for _, r in ipairs(requests()) do
      if delivered(r) and r.body and r.body.event == name then ns[#ns + 1] = integer(r.body.metadata.n) end
    end
    return ns
  end

  local function range(a, b)
    local list = {}
    for i = a, b do list[#list + 1] = i end
    return list
  end

  local function sorted(list)
    table.sort(list)
    return list
  end

  lazy_setup(function()
    math.randomseed(os.time() + (posix and posix.getpid() or 0))
    c = helpers.start_collector()
  end)

  lazy_teardown(function()
    if c then c:stop() end
  end)

  before_each(function()
    c:reset()
    c:plan({}, nil)
    base = helpers.tmpdir()
  end)

  after_each(function()
    for _, cl in ipairs(clients) do cl:close() end
    clients = {}
    helpers.remove_tree(base)
  end)

  describe("killed with SIGKILL at a random moment", function()
    local totals = { runs = 0, processes = 0, acked = 0, delivered = 0, duplicates = 0, replayed = 0,
      adopted_by_child = 0, lost = 0 }

    -- The killed process: numbered events, each acknowledged in `log_path` once emit
    -- returned true (one write(2) per line, so a line is whole or absent).
    local function emitter(spool, endpoint, sync, log_path, run, gen)
      local log = assert(io.open(log_path, "wb"))
      log:setvbuf("no")
      local cl = dn.new({ endpoint = endpoint, spool = spool, spool_sync = sync, max_retries = 100,
        retry_base = 0.05, retry_max = 0.5, timeout = 2, connect_timeout = 1, max_queue = 1000000 })
      log:write(("replayed %d\n"):format(cl:stats().replayed))
      for n = 1, 1000000 do
        local ok, err = cl:emit("spool_kill", { run = run, gen = gen, n = n, pad = pad_for(n) })
        if not ok then
          log:write(("refused %d %s\n"):format(n, tostring(err)))
          break
        end
        log:write(("acked %d\n"):format(n))
        dn.pump()
      end
      while true do
        dn.pump()
        socket.sleep(0.005)
      end
    end

    -- One run: 1 to 3 processes in turn on one folder, each killed at a random moment
    -- (a later one may die while adopting what the earlier ones left; the first only
    -- once it acknowledged an event), delivering to a
    -- live collector, one answering 503 or none; then a new client on the folder with
    -- a working collector flushes, and the collector must hold every acknowledged event.
    local function kill_run(run)
      c:reset()
      local spool = spool_dir()
      local gens = math.random(1, 3)
      local last_acked, modes = {}, {}
      local acked = {}
      for gen = 1, gens do
        local mode = ({ "live", "503", "down" })[math.random(1, 3)]
        modes[gen] = mode
        -- "always" is the promise under test; a kill (not a power loss) spares the
        -- other modes too, as the records are in the kernel once write(2) returned.
        local sync = math.random(1, 4) == 1 and ({ "interval", "never" })[math.random(1, 2)] or "always"
        c:plan({}, mode == "503" and { status = 503 } or nil)
        local log_path = ("%s/run%d-gen%d.txt"):format(base, run, gen)
        local endpoint = mode == "down" and down_url() or c.url
        local pid = fork(function() emitter(spool, endpoint, sync, log_path, run, gen) end, log_path)
        -- The first process of a run is killed at a random moment after its first
        -- acknowledged event, so that every run checks acknowledged events however
        -- loaded the machine; the others at a random moment after the fork.
        if gen == 1 then
          local deadline = socket.gettime() + within(10)
          while not (helpers.read_file(log_path) or ""):find("acked ", 1, true)
            and socket.gettime() < deadline do
            socket.sleep(0.005)
          end
          assert.truthy((helpers.read_file(log_path) or ""):find("acked ", 1, true),
            "the first process acknowledged no event in 10 s")
        end
        socket.sleep(math.random(0, KILL_DELAY_MS) / 1000)
        assert(posix.kill(pid, 9))
        local status = posix.waitpid(pid)
        local text = helpers.read_file(log_path) or ""
        assert.is_nil(text:find("refused", 1, true), text:match("refused[^\n]*"))
        assert.is_nil(text:find("error", 1, true), text:match("error[^\n]*"))
        assert.equals(128 + 9, status, "the emitting process ended before the kill")
        last_acked[gen] = 0
        for n in text:gmatch("acked (%d+)\n") do
          n = tonumber(n)
          acked[#acked + 1] = { gen = gen, n = n }
          last_acked[gen] = math.max(last_acked[gen], n)
        end
        local replayed = tonumber(text:match("replayed (%d+)\n") or "0")
        -- A process that got past dn.new adopted what its predecessor left pending:
        -- at least what that one acknowledged, when it could deliver nothing.
        if gen > 1 and text:find("replayed", 1, true) and modes[gen - 1] ~= "live" then
          assert(replayed >= last_acked[gen - 1], ("process %d replayed %d events, its predecessor "
            .. "left %d"):format(gen, replayed, last_acked[gen - 1]))
        end
        if os.getenv("DUKANEXT_SPOOL_FIGURES") then
          io.stderr:write(("run %d gen %d mode %s sync %s: acked %d, replayed %d, files %d\n"):format(
            run, gen, mode, sync, last_acked[gen], replayed, #helpers.dir_entries(spool)))
        end
        totals.adopted_by_child = totals.adopted_by_child + replayed
        totals.processes = totals.processes + 1
      end

      c:plan({}, nil)
      local cl = new_client({ endpoint = c.url, spool = spool, spool_sync = "always" })
      totals.replayed = totals.replayed + cl:stats().replayed
      assert.is_true(cl:flush(within(20)))
      assert.equals(0, cl:stats().failed)
      cl:close()
      -- Adopted files are removed, and a writer with nothing pending removes its own.
      assert.same({}, helpers.dir_entries(spool))

      local key_of, id_of_key, arrivals = {}, {}, {}
      for _, r in ipairs(requests()) do
        assert(r.body, "a body that is not JSON arrived: " .. tostring(r.raw))
        local m = r.body.metadata
        assert.equals("spool_kill", r.body.event)
        assert.equals(run, integer(m.run))
        local gen, n = integer(m.gen), integer(m.n)
        assert(last_acked[gen], "an event of a process that never ran arrived")
        -- Numbered in order: at most the one emit that was under way when the kill came
        -- goes beyond the last acknowledged.
        assert(n >= 1 and n <= last_acked[gen] + 1,
          ("event %d of process %d arrived; it acknowledged up to %d"):format(n, gen, last_acked[gen]))
        assert.equals(pad_for(n), m.pad)
        local id = ("%d:%d"):format(gen, n)
        key_of[id] = key_of[id] or r.key
        assert.equals(key_of[id], r.key, "event " .. id .. " was sent under two idempotency keys")
        id_of_key[r.key] = id_of_key[r.key] or id
        assert.equals(id_of_key[r.key], id, "two events share an idempotency key")
        if delivered(r) then arrivals[id] = (arrivals[id] or 0) + 1 end
      end
      local lost = {}
      for _, a in ipairs(acked) do
        local id = ("%d:%d"):format(a.gen, a.n)
        if not arrivals[id] then lost[#lost + 1] = id end
      end
      totals.runs = totals.runs + 1
      totals.acked = totals.acked + #acked
      totals.lost = totals.lost + #lost
      for _, count in pairs(arrivals) do
        totals.delivered = totals.delivered + 1
        totals.duplicates = totals.duplicates + count - 1
      end
      assert.same({}, lost)
    end

    it("loses no acknowledged event and sends nothing that was not emitted", function()
      if not posix then return pending(posix_error) end
      for run = 1, KILL_RUNS do kill_run(run) end
      do
        io.stderr:write(("\n[95-spool] kill -9: %d runs, %d processes killed, %d events acknowledged, "
          .. "%d delivered (%d duplicate deliveries), %d replayed at restart, %d adopted by a "
          .. "killed process, %d lost\n"):format(totals.runs, totals.processes, totals.acked,
          totals.delivered, totals.duplicates, totals.replayed, totals.adopted_by_child, totals.lost))
      end
      assert.equals(KILL_RUNS, totals.runs)
      assert.equals(0, totals.lost)
      -- The runs did kill processes with events on disk, not only idle ones.
      assert(totals.acked > KILL_RUNS, "only " .. totals.acked .. " events acknowledged")
      assert(totals.replayed > 0, "nothing was replayed")
    end)
  end)

  describe("torn and corrupt records", function()
    -- Five events left pending on disk by a client that could not deliver them.
    local function leave_five(spool, tag)
      local cl = new_client({ endpoint = down_url(), spool = spool, spool_sync = "always", max_retries = 100 })
      for n = 1, 5 do assert.is_true(cl:emit("torn", { n = n, tag = tag, pad = pad_for(n) })) end
      assert.equals(5, cl:close())
      local logs = names_ending(spool, ".log")
      assert.equals(1, #logs)
      return spool .. "/" .. logs[1]
    end

    -- Start offsets of the records in a segment: each begins with the magic "DNSP".
    local function record_starts(data)
      local starts, at = {}, 1
      while true do
        local i = data:find("DNSP", at, true)
        if not i then return starts end
        starts[#starts + 1] = i
        at = i + 4
      end
    end

    local DAMAGES = {
      -- a kill or power loss in the middle of the last append
      { name = "cut inside the last record", delivered = 4, damage = function(data, starts)
        return data:sub(1, starts[5] + 20) end },
      { name = "cut inside the last record's header", delivered = 4, damage = function(data, starts)
        return data:sub(1, starts[5] + 5) end },
      -- bit rot, or a write that reached the disk in part
      { name = "a flipped byte in the last record", delivered = 4, damage = function(data, starts)
        local at = starts[5] + 40
        return data:sub(1, at - 1) .. string.char((data:byte(at) + 1) % 256) .. data:sub(at + 1) end },
      { name = "a wrong length in the last record", delivered = 4, damage = function(data, starts)
        local at = starts[5] + 4
        return data:sub(1, at - 1) .. string.char((data:byte(at) + 3) % 256) .. data:sub(at + 1) end },
      -- space the file system extended but never wrote, or a stranger's bytes
      { name = "zeros after the last record", delivered = 5, damage = function(data)
        return data .. string.rep("\0", 4096) end },
      { name = "garbage after the last record", delivered = 5, damage = function(data)
        return data .. "DNSP\255\0\0\0garbage{\"event\":\"forged\"}" .. string.rep("x", 300) end },
    }

    for _, case in ipairs(DAMAGES) do
      it(case.name .. ": the intact events are delivered, the damaged one never", function()
        local spool = spool_dir()
        local path = leave_five(spool, case.name)
        local data = assert(helpers.read_file(path))
        local starts = record_starts(data)
        assert.equals(5, #starts)
        write_file(path, case.damage(data, starts))

        local cl = new_client({ endpoint = c.url, spool = spool, max_in_flight = 1 })
        assert.equals(case.delivered, cl:stats().replayed)
        assert.is_true(cl:flush(within(5)))
        for _, r in ipairs(requests()) do
          assert(r.body, "garbage arrived: " .. tostring(r.raw))
          assert.equals("torn", r.body.event)
          assert.equals(case.name, r.body.metadata.tag)
          assert.equals(pad_for(integer(r.body.metadata.n)), r.body.metadata.pad)
        end
        assert.same(range(1, case.delivered), delivered_ns("torn"))
        cl:close()
        assert.same({}, helpers.dir_entries(spool))
      end)
    end
  end)

  describe("a folder that cannot be written", function()
    local function assert_in_memory_path(cl, reports, count, reason)
      -- Reports reach on_error inside pump or flush, never inside emit.
      assert.same({}, reports)
      assert.is_true(cl:flush(within(5)))
      assert.equals(1, #reports, "one report for the burst, not one per event")
      assert.equals("SPOOL_ERROR", reports[1].code)
      assert.matches(reason, reports[1].message)
      local s = cl:stats()
      assert.equals(count, s.unspooled)
      assert.equals(count, s.sent)
      assert.equals(0, s.spool_pending)
      assert.same(range(1, count), sorted(delivered_ns("unwritable")))
    end

    local function reporting_client(spool)
      local reports = {}
      local cl = new_client({ endpoint = c.url, spool = spool, spool_sync = "always",
        on_error = function(err) reports[#reports + 1] = err end })
      return cl, reports
    end

    it("a spool path through a regular file: SPOOL_ERROR, and delivery from memory", function()
      local file = base .. "/a-file"
      write_file(file, "not a folder")
      local cl, reports = reporting_client(file .. "/spool")
      for n = 1, 3 do
        local ok, err = cl:emit("unwritable", { n = n })
        assert.is_nil(ok)
        assert.matches("^SPOOL_ERROR: cannot create .*a%-file/spool: Not a directory "
          .. "%(the event is queued in memory only%)$", err)
      end
      assert_in_memory_path(cl, reports, 3, "Not a directory")
    end)

    -- Read-only for this process whatever its user: root ignores modes, so root mounts
    -- a read-only tmpfs there, or sets the immutable attribute. Answers undo, or nil.
    local function make_read_only(dir, ways)
      local root = helpers.shell("id -u") == "0"
      for _, way in ipairs(ways) do
        if way == "chmod" and not root then
          os.execute("chmod 0500 " .. helpers.quote(dir))
          return function() os.execute("chmod 0700 " .. helpers.quote(dir)) end, "Permission denied"
        elseif way == "mount" and root then
          if execute_ok("mount -t tmpfs -o ro,size=16k tmpfs " .. helpers.quote(dir) .. " 2>/dev/null") then
            return function() os.execute("umount " .. helpers.quote(dir)) end, "Read%-only file system"
          end
        elseif way == "chattr" and root then
          local out = helpers.shell("chattr +i " .. helpers.quote(dir) .. " 2>&1; echo rc=$?")
          if out:match("rc=0$") then
            return function() os.execute("chattr -i " .. helpers.quote(dir)) end, "Operation not permitted"
          end
        end
      end
    end

    it("read-only from the start: SPOOL_ERROR naming the lock, and delivery from memory", function()
      local spool = spool_dir()
      assert(os.execute("mkdir -p " .. helpers.quote(spool)))
      local undo, reason = make_read_only(spool, { "chmod", "mount", "chattr" })
      if not undo then return pending("no way to make a folder read-only for root here") end
      finally(undo)
      local cl, reports = reporting_client(spool)
      for n = 1, 3 do
        local ok, err = cl:emit("unwritable", { n = n })
        assert.is_nil(ok)
        assert.matches("^SPOOL_ERROR: cannot create .*%.lock: " .. reason
          .. " %(the event is queued in memory only%)$", err)
      end
      assert_in_memory_path(cl, reports, 3, reason)
    end)

    it("read-only from the start: the client tries the folder again after 5 s, not before", function()
      local spool = spool_dir()
      assert(os.execute("mkdir -p " .. helpers.quote(spool)))
      local undo = make_read_only(spool, { "chmod", "mount", "chattr" })
      if not undo then return pending("no way to make a folder read-only for root here") end
      local undone = false
      finally(function() if not undone then undo() end end)
      local t0 = socket.gettime()
      local cl = reporting_client(spool)
      local ok, err = cl:emit("reopened", { n = 1 })
      assert.is_nil(ok)
      assert.matches("^SPOOL_ERROR: cannot create .*%.lock: ", err)
      undo()
      undone = true
      -- Writable again, but the failed open is not retried before its 5 s are up.
      ok, err = cl:emit("reopened", { n = 2 })
      assert(socket.gettime() - t0 < 5, "too slow to see the client wait for its 5 s")
      assert.is_nil(ok)
      assert.matches("^SPOOL_ERROR: cannot create .*%.lock: ", err)
      assert.same({}, helpers.dir_entries(spool))
      -- A pause that must be honoured, so never stretched: 5 s after the client began.
      socket.sleep(t0 + 5.1 - socket.gettime())
      assert.is_true(cl:emit("reopened", { n = 3 }))
      assert.equals(1, cl:stats().spool_pending)
      assert.equals(2, cl:stats().unspooled)
      assert.equals(1, #names_ending(spool, ".lock"))
      assert.is_true(cl:flush(within(5)))
      assert.same(range(1, 3), sorted(delivered_ns("reopened")))
    end)

    it("read-only while the client runs: SPOOL_ERROR, then spooled again once writable", function()
      local spool = spool_dir()
      local cl, reports = reporting_client(spool)
      assert.equals(1, #names_ending(spool, ".lock"))
      local undo, reason = make_read_only(spool, { "chmod", "chattr" })
      if not undo then return pending("no way to make a folder read-only for root here") end
      local undone = false
      finally(function() if not undone then undo() end end)
      for n = 1, 3 do
        local ok, err = cl:emit("unwritable", { n = n })
        assert.is_nil(ok)
        assert.matches("^SPOOL_ERROR: cannot create .*%.1%.log: " .. reason
          .. " %(the event is queued in memory only%)$", err)
      end
      assert_in_memory_path(cl, reports, 3, reason)
      undo()
      undone = true
      assert.is_true(cl:emit("unwritable", { n = 4 }))
      assert.equals(3, cl:stats().unspooled)
      assert.equals(1, cl:stats().spool_pending)
      assert.equals(1, #names_ending(spool, ".log"))
      assert.is_true(cl:flush(within(5)))
      assert.same(range(1, 4), sorted(delivered_ns("unwritable")))
      cl:close()
      assert.same({}, helpers.dir_entries(spool))
    end)
  end)

  describe("a full disk", function()
    -- The child: fills the spool until SPOOL_ERROR, emits a few more, flushes to the
    -- collector, then checks that the spool took events again once space was freed.
    local FULL_CHILD = [==[
      local dn = require("dukanext")
      local url, spool, pad = ...
      local reports = {}
      local cl = dn.new({ endpoint = url, spool = spool, spool_sync = "always", retry_base = 0.02,
        retry_max = 0.2, on_error = function(err) reports[#reports + 1] = err end })
      local accepted, first_error, n = 0, nil, 0
      repeat
        n = n + 1
        local ok, err = cl:emit("full_disk", { n = n, pad = string.rep("f", tonumber(pad)) })
        if ok then accepted = accepted + 1 else first_error = err end
      until not ok or n == 400
      local more_refused = 0
      for _ = 1, 3 do
        n = n + 1
        local ok, err = cl:emit("full_disk", { n = n, pad = "" })
        if not ok and err:find("^SPOOL_ERROR: ") then more_refused = more_refused + 1 end
      end
      local reports_in_emit = #reports
      local flushed = cl:flush(10)
      for _ = 1, 20 do dn.pump() end
      local s = cl:stats()
      n = n + 1
      local again = cl:emit("full_disk", { n = n, pad = "" })
      local after = cl:stats()
      local flushed_again = cl:flush(10)
      cl:close()
      io.write("accepted=", accepted, "\nlast=", n, "\nmore_refused=", more_refused,
        "\nreports_in_emit=", reports_in_emit, "\nreports=", #reports,
        "\nreport_code=", tostring(reports[1] and reports[1].code),
        "\nflushed=", tostring(flushed), "\nunspooled=", s.unspooled, "\nsent=", s.sent,
        "\nagain=", tostring(again), "\nunspooled_after=", after.unspooled,
        "\nspool_pending_after=", after.spool_pending, "\nflushed_again=", tostring(flushed_again),
        "\nfirst_error=", tostring(first_error), "\n")
    ]==]

    -- A shell command that runs `command` with a small tmpfs mounted on dir, in a
    -- mount namespace of its own; nil when this host allows none.
    local function small_tmpfs(dir, size)
      local mount = "mount -t tmpfs -o size=" .. size .. " tmpfs " .. helpers.quote(dir)
      for _, unshare in ipairs({ "unshare -m", "unshare -rm" }) do
        local probe = helpers.shell(unshare .. " sh -c " .. helpers.quote(mount .. " && echo mounted") .. " 2>/dev/null")
        if probe == "mounted" then
          return function(command)
            return unshare .. " sh -c " .. helpers.quote(mount .. " && " .. command)
          end
        end
      end
    end

    it("no space left: SPOOL_ERROR, delivery from memory, and the spool recovers", function()
      local spool = spool_dir()
      assert(os.execute("mkdir -p " .. helpers.quote(spool)))
      local wrap = small_tmpfs(spool, "32k")
      if not wrap then return pending("cannot mount a small tmpfs here (no mount namespace)") end
      local rc, out = run_wrapped(FULL_CHILD, { c.url, spool, "2000" }, wrap)
      assert.equals(0, rc, out)
      local r = parse_numbers(out)
      assert(r.accepted and r.accepted > 3 and r.accepted < 400, out)
      assert.matches("^SPOOL_ERROR: cannot write .*: No space left on device "
        .. "%(the event is queued in memory only%)$", r.first_error)
      assert.equals(3, r.more_refused)
      assert.equals(0, r.reports_in_emit)
      assert.equals(1, r.reports)
      assert.equals("SPOOL_ERROR", r.report_code)
      assert.equals("true", r.flushed)
      assert.equals(4, r.unspooled)
      assert.equals(r.last - 1, r.sent)
      -- Space came back once the events were delivered: the spool takes events again.
      assert.equals("true", r.again)
      assert.equals(4, r.unspooled_after)
      assert.equals(1, r.spool_pending_after)
      assert.equals("true", r.flushed_again)
      assert.same(range(1, r.last), sorted(delivered_ns("full_disk")))
    end)

    it("a file size limit (ulimit -f): no SIGXFSZ, SPOOL_ERROR for an event over it", function()
      -- 1 block: 512 bytes for dash, 1024 for bash; each event here is larger.
      local spool = spool_dir()
      local rc, out = run_wrapped(FULL_CHILD, { c.url, spool, "1500" }, function(command)
        return "ulimit -f 1 && " .. command
      end)
      assert.equals(0, rc, "the process died (153 is SIGXFSZ):\n" .. out)
      local r = parse_numbers(out)
      assert.equals(0, r.accepted, out)
      assert.matches("^SPOOL_ERROR: cannot write to .*: File too large %(a record of %d+ bytes, "
        .. "the file size limit is %d+%) %(the event is queued in memory only%)$", r.first_error)
      -- Small events fit under the limit, in segments of their own.
      assert.equals(0, r.more_refused)
      assert.equals(1, r.reports)
      assert.equals("SPOOL_ERROR", r.report_code)
      assert.equals(1, r.unspooled)
      assert.equals("true", r.again)
      assert.equals("true", r.flushed_again)
      assert.same(range(1, r.last), sorted(delivered_ns("full_disk")))
    end)

    it("under a file size limit, segments end before it and every event survives", function()
      local spool = spool_dir()
      local child = [==[
        local dn = require("dukanext")
        local url, spool = ...
        local cl = dn.new({ endpoint = url, spool = spool, spool_sync = "always", max_retries = 100 })
        local accepted = 0
        for n = 1, 200 do
          if cl:emit("fsize", { n = n, pad = string.rep("s", 200) }) then accepted = accepted + 1 end
        end
        io.write("accepted=", accepted, "\nunspooled=", cl:stats().unspooled, "\n")
        -- Ends without close: the events stay on disk for the next process.
      ]==]
      local rc, out = run_wrapped(child, { down_url(), spool }, function(command)
        return "ulimit -f 16 && " .. command
      end)
      assert.equals(0, rc, "the process died (153 is SIGXFSZ):\n" .. out)
      local r = parse_numbers(out)
      assert.equals(200, r.accepted, out)
      assert.equals(0, r.unspooled)
      local logs = names_ending(spool, ".log")
      assert(#logs > 2, "expected several segments, found " .. #logs)
      for _, name in ipairs(logs) do
        local size = #assert(helpers.read_file(spool .. "/" .. name))
        assert(size <= 16 * 1024, name .. " holds " .. size .. " bytes")
      end
      local cl = new_client({ endpoint = c.url, spool = spool, max_in_flight = 1 })
      assert.equals(200, cl:stats().replayed)
      assert.is_true(cl:flush(within(10)))
      assert.same(range(1, 200), delivered_ns("fsize"))
      cl:close()
      assert.same({}, helpers.dir_entries(spool))
    end)
  end)

  it("spool_max_bytes: QUEUE_FULL while the collector holds events, dropped counts", function()
    c:plan({}, { status = 503 })
    local spool = spool_dir()
    local cl = new_client({ endpoint = c.url, spool = spool, spool_max_bytes = 4096, max_retries = 100 })
    local accepted, refusal = 0, nil
    for n = 1, 100 do
      local ok, err = cl:emit("bounded", { n = n, pad = string.rep("b", 60) })
      if not ok then
        refusal = err
        break
      end
      accepted = n
      dn.pump()
    end
    assert(accepted >= 4 and accepted < 100, "accepted " .. accepted)
    local held = tonumber(refusal:match("^QUEUE_FULL: the spool holds (%d+) bytes %(spool_max_bytes%)$"))
    assert(held, refusal)
    assert(held <= 4096 and held > 2048, refusal)
    for n = 1, 3 do
      local ok, err = cl:emit("bounded", { n = accepted + 1 + n, pad = string.rep("b", 60) })
      assert.is_nil(ok)
      assert.matches("^QUEUE_FULL: the spool holds %d+ bytes %(spool_max_bytes%)$", err)
    end
    local s = cl:stats()
    assert.equals(4, s.dropped)
    assert.equals(4, s.dropped_spool_max_bytes)
    assert.equals(accepted, s.spool_pending)
    assert(s.spool_bytes <= 4096)

    c:plan({}, nil)
    assert.is_true(cl:flush(within(10)))
    assert.same(range(1, accepted), sorted(delivered_ns("bounded")))
    -- Delivered events free their space by the time flush says nothing is pending.
    assert(cl:stats().spool_bytes < 2048, cl:stats().spool_bytes)
    assert.is_true(cl:emit("bounded", { n = 1000 }))
    assert.is_true(cl:flush(within(5)))
  end)

  describe("processes sharing one folder", function()
    -- Files: the child says it is ready, then waits (pumping) for the word to go on.
    -- Each side gives up after a while, so a failure never leaves a process waiting.
    local function barrier(name)
      local ready, go = base .. "/" .. name .. ".ready", base .. "/" .. name .. ".go"
      local function wait_for(path, timeout)
        local deadline = socket.gettime() + timeout
        repeat
          if helpers.read_file(path) then return true end
          dn.pump()
          socket.sleep(0.005)
        until socket.gettime() > deadline
        return false
      end
      return {
        child_ready = function() write_file(ready, "") end,
        child_wait = function() return wait_for(go, within(30)) end,
        parent_wait = function() return wait_for(ready, within(10)) end,
        parent_go = function() write_file(go, "") end,
      }
    end

    it("each writes its own files, named by pid and a random part, and both deliver", function()
      if not posix then return pending(posix_error) end
      local spool = spool_dir()
      local pids, barriers = {}, {}
      for gen = 1, 2 do
        local b = barrier("writer" .. gen)
        barriers[gen] = b
        pids[gen] = fork(function()
          local cl = dn.new(helpers.fast({ endpoint = c.url, spool = spool, spool_sync = "always" }))
          for n = 1, 40 do assert(cl:emit("shared", { gen = gen, n = n })) end
          b.child_ready()
          b.child_wait()
          assert(cl:flush(10))
          cl:close()
        end)
      end
      local reaped = {}
      finally(function()
        for gen = 1, 2 do
          if not reaped[gen] then
            posix.kill(pids[gen], 9)
            posix.waitpid(pids[gen])
          end
        end
      end)
      for gen = 1, 2 do assert.is_true(barriers[gen].parent_wait()) end
      -- Both alive: one lock each, and every segment belongs to one of them.
      assert.same(sorted({ pids[1], pids[2] }), lock_pids(spool))
      for gen = 1, 2 do
        local own = files_of(spool, pids[gen])
        assert(#own >= 2, "process " .. gen .. " has no segment of its own")
      end
      assert.equals(#helpers.dir_entries(spool), #files_of(spool, pids[1]) + #files_of(spool, pids[2]))
      for gen = 1, 2 do barriers[gen].parent_go() end
      for gen = 1, 2 do
        reaped[gen] = true
        assert.equals(0, posix.waitpid(pids[gen]))
      end
      local arrivals = {}
      for _, r in ipairs(requests()) do
        if delivered(r) then
          local id = integer(r.body.metadata.gen) .. ":" .. integer(r.body.metadata.n)
          arrivals[#arrivals + 1] = id
          assert.equals("shared", r.body.event)
        end
      end
      local want = {}
      for gen = 1, 2 do
        for n = 1, 40 do want[#want + 1] = gen .. ":" .. n end
      end
      assert.same(sorted(want), sorted(arrivals))
      assert.same({}, helpers.dir_entries(spool))
    end)

    it("a live writer's files are left alone; once it is gone they are adopted and sent with the same keys, in order",
      function()
        if not posix then return pending(posix_error) end
        local spool = spool_dir()
        -- Every attempt answered 503 with a long Retry-After: each event is tried once,
        -- its key seen by the collector, then it waits.
        c:plan({}, { status = 503, retry_after = 60 })
        local b = barrier("writer")
        local log_path = base .. "/writer.txt"
        local pid = fork(function()
          local cl = dn.new({ endpoint = c.url, spool = spool, spool_sync = "always", max_retries = 100,
            retry_max = 60, max_in_flight = 32 })
          for n = 1, 20 do assert(cl:emit("adopted", { n = n, pad = pad_for(n) })) end
          local deadline = socket.gettime() + 10
          repeat
            dn.pump()
            socket.sleep(0.005)
          until (cl:stats().in_flight == 0 and cl:stats().retries >= 20) or socket.gettime() > deadline
          b.child_ready()
          b.child_wait()
          posix._exit(0) -- gone without close: its events stay on disk
        end, log_path)
        local reaped = false
        finally(function()
          if not reaped then
            posix.kill(pid, 9)
            posix.waitpid(pid)
          end
        end)
        assert.is_true(b.parent_wait(), helpers.read_file(log_path))
        local first_keys = {}
        for _, r in ipairs(requests()) do
          assert.equals(503, r.status)
          assert.equals("1", r.attempt)
          first_keys[integer(r.body.metadata.n)] = r.key
        end
        for n = 1, 20 do assert(first_keys[n], "event " .. n .. " had no first attempt") end

        -- While it runs, a new client of the folder takes nothing of it.
        c:plan({}, nil)
        local bystander = new_client({ endpoint = c.url, spool = spool })
        assert.equals(0, bystander:stats().replayed)
        assert.equals(0, bystander:stats().spool_pending)
        assert.is_true(bystander:flush(within(2)))
        assert.same({}, delivered_ns("adopted"))
        assert(#files_of(spool, pid) >= 2, "the live writer's files are gone")
        assert.same(sorted({ pid, posix.getpid() }), lock_pids(spool))

        b.parent_go()
        reaped = true
        assert.equals(0, posix.waitpid(pid))
        assert(#files_of(spool, pid) >= 2, "the writer left no files")
        local adopter = new_client({ endpoint = c.url, spool = spool, max_in_flight = 1 })
        assert.equals(20, adopter:stats().replayed)
        assert.same({}, files_of(spool, pid))
        assert.equals(0, bystander:stats().replayed)
        assert.is_true(adopter:flush(within(5)))
        -- In the order they were emitted, each under the key of its first attempt.
        local order = {}
        for _, r in ipairs(requests()) do
          if delivered(r) then
            local n = integer(r.body.metadata.n)
            order[#order + 1] = n
            assert.equals(first_keys[n], r.key, "event " .. n .. " changed its idempotency key")
            assert.equals(pad_for(n), r.body.metadata.pad)
          end
        end
        assert.same(range(1, 20), order)
        adopter:close()
        bystander:close()
        assert.same({}, helpers.dir_entries(spool))
      end)
  end)

  it("interval: the group commit still comes after everything is delivered", function()
    local spool = spool_dir()
    local cl = new_client({ endpoint = c.url, spool = spool, spool_sync = "interval", spool_interval = 0.3 })
    assert.is_true(cl:emit("commit", { n = 1 }))
    assert.is_true(cl:flush(within(5)))
    -- Nothing is pending, yet a host with its own loop hears when to pump for the commit.
    local due = dn.next_timeout()
    assert.is_number(due)
    assert(due <= 0.3, due)
    socket.sleep(due + 0.05)
    assert.equals(0, dn.pump())
    assert.is_nil(dn.next_timeout())
    assert.same({ 1 }, delivered_ns("commit"))
  end)

  it("replays every pending event whatever max_queue says: they were accepted once already", function()
    local spool = spool_dir()
    local first = new_client({ endpoint = down_url(), spool = spool, spool_sync = "always" })
    for n = 1, 10 do assert.is_true(first:emit("over_max_queue", { n = n })) end
    assert.equals(10, first:close()) -- cancelled here, still pending on disk
    local cl = new_client({ endpoint = c.url, spool = spool, max_queue = 3 })
    local s = cl:stats()
    assert.equals(10, s.replayed)
    assert.equals(10, s.queued + s.in_flight)
    assert.equals(0, s.dropped)
    -- The queue is over max_queue with them: a new event is refused until it drains.
    local ok, err = cl:emit("over_max_queue", { n = 11 })
    assert.is_nil(ok)
    assert.matches("^QUEUE_FULL: ", err)
    assert.equals(1, cl:stats().dropped_max_queue)
    assert.is_true(cl:flush(within(5)))
    assert.same(range(1, 10), sorted(delivered_ns("over_max_queue")))
  end)

  it("a replayed copy of an event that had arrived is dropped by the service (dedupe)", function()
    local d = helpers.start_collector({ dedupe = true })
    finally(function() d:stop() end)
    -- The service keeps the event, but the connection closes before its answer; the
    -- retries get 503: the event stays pending in the spool when its process ends.
    d:plan({ { close = true, process = true } }, { status = 503 })
    local spool = spool_dir()
    local first = new_client({ endpoint = d.url, spool = spool, spool_sync = "always", max_retries = 100 })
    assert.is_true(first:emit("arrived_once", { n = 1 }))
    assert.is_true(helpers.pump_until(function() return #d:requests() >= 1 end, within(5)))
    assert.equals(1, first:close())
    d:plan({}, nil)
    local cl = new_client({ endpoint = d.url, spool = spool })
    assert.equals(1, cl:stats().replayed)
    assert.is_true(cl:flush(within(5)))
    local reqs = d:requests()
    local kept, last = reqs[1], reqs[#reqs]
    assert.equals(0, kept.status)
    assert.equals("accepted", kept.outcome)
    -- The replay: the same key and the same bytes, answered 200, and not kept twice.
    assert.equals(kept.headers.idempotency_key, last.headers.idempotency_key)
    assert.equals(kept.body, last.body)
    assert.equals(200, last.status)
    assert.equals("duplicate", last.action)
    assert.equals(1, #d:events())
    local counts = d:answers_by_key()
    assert.same({ [kept.headers.idempotency_key] = 1 }, counts)
  end)

  it("a clean close with nothing pending leaves the folder empty", function()
    local spool = spool_dir()
    local cl = new_client({ endpoint = c.url, spool = spool, spool_sync = "always" })
    for n = 1, 5 do assert.is_true(cl:emit("clean", { n = n })) end
    assert.is_true(cl:flush(within(5)))
    assert.equals(1, #names_ending(spool, ".lock"))
    assert.equals(1, #names_ending(spool, ".log"))
    assert.equals(0, cl:stats().spool_pending)
    assert.equals(0, cl:close())
    assert.same({}, helpers.dir_entries(spool))
    assert.same(range(1, 5), sorted(delivered_ns("clean")))
  end)
end)
