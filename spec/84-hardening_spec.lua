-- Breaking dukanext from Lua as a hostile program would: finalizers that outlive the
-- module's state, a collected file storage used again, options inherited through
-- __index, Retry-After beyond any clock, a client's own __gc called while it runs,
-- credentials in URLs, answers that never end. Each case that once crashed runs in a
-- process of its own (the interpreter running the specs, sanitized under ASan).
local helpers = require("spec.helpers")

local dn = helpers.dn()
local within = helpers.within

-- A finalizer on every Lua: 5.1 and LuaJIT run __gc for userdata only.
local GC_GUARD = [[
local function gc_guard(fn)
  if newproxy then
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = fn
    return proxy
  end
  return setmetatable({}, { __gc = fn })
end
]]

-- Runs script in a new process: it must exit 0 with no sanitizer report. Answers its
-- stdout and stderr.
local function run_clean(script, args, env)
  local rc, out, err = helpers.run_lua(GC_GUARD .. script, args, env)
  assert.is_nil(err:find("runtime error", 1, true), err)
  assert.is_nil(err:find("Sanitizer", 1, true), err)
  assert.equals(0, rc, "exit " .. tostring(rc) .. "\n" .. out .. err)
  return out, err
end

-- 5.2 and later finalize in the reverse order of marking, so a finalizer made before
-- require runs after the module's own; 5.1 and LuaJIT give no such order.
local ordered_finalizers = _VERSION ~= "Lua 5.1"

describe("hardening", function()
  local c

  lazy_setup(function()
    c = helpers.start_collector()
  end)

  lazy_teardown(function()
    if c then c:stop() end
  end)

  before_each(function()
    c:reset()
    c:plan({}, nil)
  end)

  describe("a finalizer that runs after the module's state is closed", function()
    it("gets CLOSED from every module function, and raises from new and configure", function()
      local out = run_clean([[
local dn
local app = gc_guard(function()
  print("flush", dn.flush(1))
  print("pump", dn.pump())
  print("next_timeout", dn.next_timeout())
  print("poll_fd", dn.poll_fd())
  print("emit", dn.emit("bye", {}))
  print("stats", dn.stats())
  print("get_user_id", dn.get_user_id())
  print("new", pcall(dn.new, { endpoint = "http://127.0.0.1:1/x" }))
  print("configure", pcall(dn.configure, { endpoint = "http://127.0.0.1:1/x" }))
  print("done")
end)
dn = require("dukanext")
dn.configure{ endpoint = "http://127.0.0.1:1/x" }
dn.emit("start", {})
]])
      assert.matches("done\n", out)
      if ordered_finalizers then
        local closed = "\tnil\tCLOSED: dukanext is shut down: its Lua state is closing\n"
        for _, name in ipairs({ "flush", "pump", "next_timeout", "poll_fd", "emit", "stats",
                                "get_user_id" }) do
          assert.truthy(out:find(name .. closed, 1, true), name .. " in:\n" .. out)
        end
        assert.matches("new\tfalse\t[^\n]*dukanext: no new client: dukanext is shut down", out)
        assert.matches("configure\tfalse\t[^\n]*dukanext: no new client", out)
      end
    end)

    it("frees a client that a finalizer makes while the state closes", function()
      -- Lua gives objects made during lua_close no finalizer: under ASan, a leak.
      local out = run_clean([[
local dn = require("dukanext")
local app = gc_guard(function()
  local late = dn.new({ endpoint = "http://127.0.0.1:1/x" })
  print("late", late:emit("late", {}))
end)
]])
      assert.matches("late\ttrue\n", out)
    end)

    it("can still flush while the state is open (a finalizer made after require)", function()
      local out = run_clean([[
local dn = require("dukanext")
dn.configure{ endpoint = ... }
local app = gc_guard(function() print("flush", dn.flush(5)) end)
print("emit", dn.emit("quit", {}))
]], { c.url })
      assert.matches("emit\ttrue\n", out)
      assert.matches("flush\ttrue\n", out)
      assert.equals(1, #c:wait_events(1, within(5)))
    end)
  end)

  describe("a collected dn.file_storage", function()
    it("used again from a finalizer raises into STORAGE_ERROR instead of crashing", function()
      local dir = helpers.tmpdir()
      finally(function() helpers.remove_tree(dir) end)
      local out = run_clean([[
local dn = require("dukanext")
local errors = {}
dn.configure{ endpoint = ..., on_error = function(e) errors[#errors + 1] = e.message end }
do
  local st
  local g = gc_guard(function() print("emit", dn.emit("bye", {}, { storage = st })) end)
  st = dn.file_storage(select(2, ...) .. "/f2.json")
end
collectgarbage(); collectgarbage()
print("flush", dn.flush(5))
for _, m in ipairs(errors) do print("error", m) end
]], { c.url, dir })
      assert.matches("emit\ttrue\n", out)
      assert.matches("flush\ttrue\n", out)
      if ordered_finalizers then
        assert.matches("error\tstorage.get%(\"dn_user_id\"%) raised: [^\n]*dukanext: this file "
          .. "storage was collected; make another with dn.file_storage%(path%)", out)
      end
    end)
  end)

  describe("options inherited through __index", function()
    local EP = "http://127.0.0.1:1/x"
    local function inherited(defaults, own)
      own = own or {}
      if own.endpoint == nil then own.endpoint = EP end
      return setmetatable(own, { __index = defaults })
    end

    it("are checked: a bogus http_version or spool_sync raises (no crash)", function()
      local out = run_clean([[
local dn = require("dukanext")
local EP = "http://127.0.0.1:1/x"
print(pcall(dn.new, setmetatable({ endpoint = EP }, { __index = { http_version = "bogus" } })))
print(pcall(dn.new, setmetatable({ endpoint = EP }, { __index = { spool_sync = {} } })))
]])
      assert.matches("false\t[^\n]*option 'http_version' must be \"default\", \"1.1\"", out)
      assert.matches("false\t[^\n]*option 'spool_sync' must be \"always\", \"interval\" or \"never\"", out)
    end)

    it("are checked: a header with CR/LF is refused and never reaches the wire", function()
      local ok, err = pcall(dn.new, inherited({ headers = { ["X-Shop"] = "eu-1\r\nX-Injected: yes" } },
        { endpoint = c.url }))
      assert.is_false(ok)
      assert.matches("option 'headers': the value of 'X%-Shop' contains NUL, CR or LF", err)
    end)

    it("are checked: out-of-range retries, max_in_flight = 0 and gopher:// are refused", function()
      local cases = {
        { { max_retries = 1e12 }, "option 'max_retries' must be an integer from 0 to 100" },
        { { retry_base = -1 }, "option 'retry_base' must be a number of seconds from 0 to" },
        { { retry_max = -5 }, "option 'retry_max' must be a number of seconds from 0 to" },
        { { max_in_flight = 0 }, "option 'max_in_flight' must be \"auto\" or an integer from 1 to 1024" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(dn.new, inherited(case[1]))
        assert.is_false(ok)
        assert.truthy(err:find(case[2], 1, true), err)
      end
      local ok, err = pcall(dn.new, setmetatable({}, { __index = { endpoint = "gopher://x/" } }))
      assert.is_false(ok)
      assert.matches("option 'endpoint' must be an http:// or https:// URL: gopher://x/", err)
      -- Not inherited, the same value gets the same answer.
      ok, err = pcall(dn.new, { endpoint = EP, max_in_flight = 0 })
      assert.is_false(ok)
      assert.matches("option 'max_in_flight' must be \"auto\" or an integer from 1 to 1024", err)
    end)

    it("are read once each, and what was checked is what applies", function()
      local reads = {}
      local defaults = setmetatable({}, { __index = function(_, k)
        reads[k] = (reads[k] or 0) + 1
        -- A first read that passes, then a value that would not.
        if k == "headers" then
          return reads[k] == 1 and { ["X-Shop"] = "eu-1" } or { ["X-Shop"] = "a\r\nX-Injected: yes" }
        end
        if k == "max_in_flight" then return reads[k] == 1 and 2 or 0 end
      end })
      local cl = dn.new(setmetatable({ endpoint = c.url }, { __index = defaults }))
      finally(function() cl:close() end)
      for name, n in pairs(reads) do assert.equals(1, n, name) end
      assert.equals(1, reads.headers)
      assert.is_true(cl:emit("inherited", {}))
      assert.is_true(cl:flush(within(5)))
      local rec = c:requests()[1]
      assert.equals("eu-1", rec.all_headers["x-shop"])
      assert.is_nil(rec.all_headers["x-injected"])
    end)

    it("apply, as the usual defaults idiom expects", function()
      local defaults = { headers = { ["X-Shop"] = "eu-1" }, max_retries = 0, endpoint = c.url }
      local cl = dn.new(setmetatable({}, { __index = defaults }))
      finally(function() cl:close() end)
      assert.is_true(cl:emit("inherited", {}))
      assert.is_true(cl:flush(within(5)))
      assert.equals("eu-1", c:requests()[1].all_headers["x-shop"])
    end)
  end)

  describe("Retry-After beyond any clock", function()
    -- The first answer pauses the client; the retry comes after retry_max, not before
    -- (a lower bound only), and the event arrives.
    local function check_capped(value)
      c:plan({ { status = 503, retry_after = value } }, nil)
      local out = run_clean([[
local dn = require("dukanext")
local cl = dn.new{ endpoint = ..., retry_base = 0.001, retry_max = 0.5, max_retries = 3 }
print("emit", cl:emit("paused", {}))
print("flush", cl:flush(tonumber(select(2, ...))))
print("retries", cl:stats().retries)
]], { c.url, tostring(within(10)) })
      assert.matches("flush\ttrue\n", out)
      assert.matches("retries\t1\n", out)
      local requests = c:requests()
      assert.equals(2, #requests)
      assert.equals(503, requests[1].status)
      assert.equals(200, requests[2].status)
      local gap = requests[2].time - requests[1].time
      assert.is_true(gap >= 0.4, "retried after " .. gap .. " s")
    end

    it("in 64 bits (seconds * 1000 would overflow) is capped at retry_max", function()
      check_capped("9999999999999999")
    end)

    it("beyond 64 bits is capped at retry_max, not ignored", function()
      check_capped("99999999999999999999999999999")
    end)
  end)

  describe("a client's own __gc and close while it runs", function()
    it("is out of reach: getmetatable answers a name, not the metatable", function()
      local cl = dn.new({ endpoint = c.url })
      finally(function() cl:close() end)
      assert.equals("dukanext.client", getmetatable(cl))
    end)

    it("from a storage callback inside emit: no crash, the emit answers", function()
      local out = run_clean([[
local dn = require("dukanext")
local c1, c2
c1 = dn.new{ endpoint = "http://127.0.0.1:1/x", storage = {
  get = function() getmetatable(c1).__gc(c1) end, set = function() end } }
print("emit1", c1:emit("x", {}))
-- Through the debug library the real __gc is reached: it closes the client in use.
c2 = dn.new{ endpoint = "http://127.0.0.1:1/x", storage = {
  get = function() debug.getmetatable(c2).__gc(c2) end, set = function() end } }
print("emit2", c2:emit("x", {}))
print("after", tostring(c2):match("%((%a+)%)"), c2:stats().queued)
c1, c2 = nil, nil
collectgarbage(); collectgarbage()
print("done")
]])
      assert.matches("emit1\ttrue\n", out)
      assert.matches("emit2\tnil\tCLOSED: the client is closed\n", out)
      assert.matches("after\tclosed\t0\n", out)
      assert.matches("done\n", out)
    end)

    it("from on_error inside flush: no crash, the flush answers", function()
      local out = run_clean([[
local dn = require("dukanext")
local c1, c2
-- A refused port is "no network": max_age ends the wait for it.
c1 = dn.new{ endpoint = "http://127.0.0.1:1/x", max_age = 0.3,
  on_error = function() getmetatable(c1).__gc(c1) end }
print("emit1", c1:emit("x", {}))
print("flush1", c1:flush(5))
c2 = dn.new{ endpoint = "http://127.0.0.1:1/x", max_age = 0.3,
  on_error = function(e) debug.getmetatable(c2).__gc(c2); print("on_error", e.code) end }
print("emit2", c2:emit("x", {}))
print("emit3", c2:emit("y", {}))
print("flush2", c2:flush(5))
print("closed", c2:emit("z", {}))
c1, c2 = nil, nil
collectgarbage(); collectgarbage()
print("done")
]])
      assert.matches("flush1\ttrue\n", out)
      assert.matches("on_error\tEXPIRED\n", out)
      assert.matches("flush2\ttrue\n", out)
      assert.matches("closed\tnil\tCLOSED: the client is closed\n", out)
      assert.matches("done\n", out)
    end)
  end)

  describe("credentials in URLs", function()
    it("are never printed: the insecure warning and endpoint errors hide userinfo", function()
      local _, err = run_clean([[
local dn = require("dukanext")
dn.new{ endpoint = "https://shop:s3cret-token@127.0.0.1:1/x", insecure = true }
local ok, msg = pcall(dn.new, { endpoint = "http://shop:s3cret-token@127.0.0.1/x y" })
io.stderr:write("error: ", msg, "\n")
]])
      assert.matches("dukanext: TLS verification is off %(insecure = true%): "
        .. "https://%*%*%*@127%.0%.0%.1:1/x\n", err)
      assert.matches("error: [^\n]*is not a valid URL: http://%*%*%*@127%.0%.0%.1/x y\n", err)
      assert.is_nil(err:find("s3cret", 1, true), err)
    end)
  end)

  describe("an answer that never ends", function()
    it("is read up to a few KiB, then dropped: a 200 is delivered, not a TIMEOUT", function()
      c:plan({ { endless = 30 } }, nil)
      local errors = {}
      local cl = dn.new(helpers.fast({ endpoint = c.url, timeout = 5, max_retries = 0,
        on_error = function(e) errors[#errors + 1] = e.code end }))
      finally(function() cl:close() end)
      assert.is_true(cl:emit("endless", {}))
      assert.is_true(cl:flush(within(4)))
      local s = cl:stats()
      assert.equals(1, s.sent)
      assert.equals(0, s.failed)
      assert.same({}, errors)
    end)

    it("with a 503 status is retried as a 503", function()
      c:plan({ { status = 503, endless = 30 } }, nil)
      local cl = dn.new(helpers.fast({ endpoint = c.url, timeout = 5, max_retries = 2 }))
      finally(function() cl:close() end)
      assert.is_true(cl:emit("endless", {}))
      assert.is_true(cl:flush(within(4)))
      local s = cl:stats()
      assert.equals(1, s.sent)
      assert.equals(1, s.retries)
      local requests = c:requests()
      assert.equals(503, requests[1].status)
      assert.equals(200, requests[2].status)
    end)
  end)
end)
