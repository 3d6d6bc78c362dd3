-- Lifecycle: when on_error runs and what it may do, closing a client, clients
-- whose last reference is dropped, and closing the Lua state mid-transfer.
local helpers = require("spec.helpers")

local socket = require("socket")

local dn = helpers.dn()
local now = helpers.now
local within = helpers.within

local CLOSE_VARIABLE = "closes a client held in a <close> variable (Lua 5.4 only)"
helpers.declare_skip(CLOSE_VARIABLE, _VERSION < "Lua 5.4")

local function event_names(lines)
  local names = {}
  for i, line in ipairs(lines) do names[i] = helpers.decode(line).event end
  table.sort(names)
  return names
end

local function count(list, pred)
  local n = 0
  for _, v in ipairs(list) do
    if pred(v) then n = n + 1 end
  end
  return n
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a Lua script in a new process of the interpreter running the specs (the
-- sanitized host under ASan), with the module under test. Answers the exit code
-- and everything the process wrote (stdout and stderr).
local function run_lua(script)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(script)
  f:close()
  local interpreter = (arg and arg[-1]) or "lua5.4"
  local cpath = os.getenv("DUKANEXT_CPATH") or "./build/?.so"
  local p = assert(io.popen("DUKANEXT_CPATH=" .. quote(cpath) .. " " .. quote(interpreter) .. " "
    .. quote(path) .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  local text, rc = out:match("^(.-)__rc=(%d+)%s*$")
  return tonumber(rc), text or out
end

describe("lifecycle", function()
  local c
  local clients = {}

  -- A client of the collector with quick retries; closed after the test.
  local function client(opts)
    opts = helpers.fast(opts)
    opts.endpoint = opts.endpoint or c.url
    local cl = dn.new(opts)
    clients[#clients + 1] = cl
    return cl
  end

  lazy_setup(function()
    c = helpers.start_collector()
  end)

  lazy_teardown(function()
    if c then c:stop() end
  end)

  before_each(function()
    c:reset()
  end)

  after_each(function()
    for i = #clients, 1, -1 do
      clients[i]:close()
      clients[i] = nil
    end
  end)

  describe("on_error", function()
    it("runs inside pump and flush, never inside emit", function()
      local in_emit, calls = false, {}
      local failing_storage = {
        get = function() error("disk on fire") end,
        set = function() end,
      }
      -- The first answer comes 0.2 s after its request arrived: it waits on the socket
      -- while the second emit runs.
      c:plan({ { delay = 0.2, status = 400, code = "INVALID_EVENT" } }, { status = 400, code = "INVALID_EVENT" })
      local cl = client({
        storage = failing_storage,
        on_error = function(err)
          calls[#calls + 1] = { code = err.code, in_emit = in_emit }
        end,
      })

      in_emit = true
      assert.is_true(cl:emit("first"))
      in_emit = false
      -- The storage failed inside emit: its report waits for the next pump.
      assert.same({}, calls)
      -- Once "first" has arrived, the pumps stop; its answer then waits on the socket,
      -- where emit must leave it: it is there once the state's descriptor is readable.
      assert.is_true(helpers.pump_until(function() return #c:arrivals() == 1 end, within(3)))
      if dn.poll_fd() then
        local readable = socket.select({ { getfd = function() return dn.poll_fd() end } }, nil, within(2))
        assert.equals(1, #readable, "the answer to \"first\" did not arrive")
      else
        -- No descriptor to watch (the portable build): the collector's log says when
        -- it answered, and the answer then waits on the socket just the same.
        assert.equals(1, #c:wait_requests(1, within(2)), "the answer to \"first\" was not sent")
      end

      local storage_errors = count(calls, function(call) return call.code == "STORAGE_ERROR" end)
      assert(storage_errors >= 1, "pump did not report the storage failure")
      assert.equals(0, count(calls, function(call) return call.code == "INVALID_EVENT" end))

      local before = #calls
      in_emit = true
      assert.is_true(cl:emit("second"))
      in_emit = false
      assert.equals(before, #calls)

      assert.is_true(cl:flush(5))
      assert.equals(2, count(calls, function(call) return call.code == "INVALID_EVENT" end))
      assert.equals(0, count(calls, function(call) return call.in_emit end))
    end)

    it("may raise: pump and flush return normally and later events still go", function()
      c:plan({ { status = 400 }, { status = 400 } })
      local calls = 0
      local cl = client({
        on_error = function()
          calls = calls + 1
          error("on_error blew up")
        end,
      })
      assert.is_true(cl:emit("fails", { i = 1 }))
      local ok, done = pcall(helpers.pump_until, function() return calls == 1 end, 5)
      assert.is_true(ok)
      assert.is_true(done)

      assert.is_true(cl:emit("fails", { i = 2 }))
      assert.is_true(cl:emit("delivered"))
      local flushed, result = pcall(cl.flush, cl, 5)
      assert.is_true(flushed)
      assert.is_true(result)
      assert.equals(2, calls)
      assert.same({ "delivered" }, event_names(c:event_lines()))
      local s = cl:stats()
      assert.equals(1, s.sent)
      assert.equals(2, s.failed)
    end)

    it("that raises is reported on stderr", function()
      c:plan({ { status = 400 } })
      local rc, output = run_lua(([[
        local cpath = os.getenv("DUKANEXT_CPATH")
        if cpath then package.cpath = cpath .. ";" .. package.cpath end
        local dn = require("dukanext")
        local c = dn.new({ endpoint = %q, on_error = function() error("boom from on_error") end })
        assert(c:emit("fails"))
        print("flushed", c:flush(5))
      ]]):format(c.url))
      assert.equals(0, rc)
      assert.matches("dukanext: on_error raised: [^\n]*boom from on_error", output)
      assert.matches("flushed\ttrue\n$", output)
    end)

    it("may emit through the default client", function()
      finally(function() dn.configure() end)
      dn.configure(helpers.fast({ endpoint = c.url }))
      c:plan({ { status = 400 } })
      local emitted
      local cl = client({
        on_error = function(err)
          emitted = { dn.emit("from_on_error", { failed = err.event }) }
        end,
      })
      assert.is_true(cl:emit("doomed"))
      assert.is_true(dn.flush(5))

      assert.same({ true }, emitted)
      local events = c:events()
      assert.equals(1, #events)
      assert.equals("from_on_error", events[1].event)
      assert.equals("doomed", events[1].metadata.failed)
    end)

    it("may emit through its own client", function()
      c:plan({ { status = 400 } })
      local cl
      local emitted
      cl = client({
        on_error = function(err)
          emitted = { cl:emit("second_chance", { failed = err.event }) }
        end,
      })
      assert.is_true(cl:emit("doomed"))
      assert.is_true(cl:flush(5))

      assert.same({ true }, emitted)
      assert.same({ "second_chance" }, event_names(c:event_lines()))
      assert.equals(1, cl:stats().sent)
    end)
  end)

  describe("close", function()
    it("cancels what is in flight and queued, promptly, and refuses later events #timing", function()
      c:plan({ { delay = 2, status = 503 }, { delay = 2, status = 503 } })
      local cl = client({ max_in_flight = 2, timeout = 5 })
      for i = 1, 3 do assert.is_true(cl:emit("cancelled", { i = i })) end
      assert.is_true(helpers.pump_until(function() return cl:stats().in_flight == 2 end, within(3)))
      -- Both requests reach the hanging server.
      assert.is_true(helpers.pump_until(function() return #c:arrivals() == 2 end, within(3)))
      assert.equals(2, cl:stats().in_flight)

      local t0 = now()
      local undelivered = cl:close()
      local elapsed = now() - t0
      assert.equals(3, undelivered)
      assert(elapsed < within(0.5), "close took " .. elapsed .. " s")
      local s = cl:stats()
      assert.equals(3, s.cancelled)
      assert.equals(0, s.queued)
      assert.equals(0, s.in_flight)
      assert.equals(0, s.sent)

      local ok, err = cl:emit("after_close")
      assert.is_nil(ok)
      assert.matches("^CLOSED: ", err)
      assert.equals(0, cl:close())
      assert.equals(3, cl:stats().cancelled)
      assert.equals(0, dn.pump())

      -- The held requests are logged when the server gives up holding them; the
      -- queued third event never went out.
      assert.is_true(c:wait_idle(within(4)), "the held requests were not answered")
      local records = c:requests()
      local dump = {}
      for i, r in ipairs(records) do
        dump[i] = ("%s %s attempt=%s %s"):format(r.seq, r.status, tostring(r.headers.attempt), r.body)
      end
      assert.equals(2, #records, table.concat(dump, "\n"))
    end)

    it("of an idle client returns 0", function()
      local cl = client()
      assert.is_true(cl:emit("delivered"))
      assert.is_true(cl:flush(5))
      assert.equals(0, cl:close())
      assert.equals(0, cl:stats().cancelled)
    end)
  end)

  describe("a client whose last reference is dropped", function()
    -- Builds the client in a frame of its own so no stack slot keeps it.
    local function emit_and_drop(n, opts)
      local cl = dn.new(helpers.fast(opts or { endpoint = c.url }))
      for i = 1, n do assert(cl:emit("orphaned", { i = i })) end
      local ref = setmetatable({ cl }, { __mode = "v" })
      cl = nil
      return ref
    end

    it("still delivers its queued events, then is collected", function()
      local ref = emit_and_drop(5)
      collectgarbage()
      collectgarbage()
      assert.is_not_nil(ref[1], "a client with queued events was collected")

      assert.is_true(dn.flush(5))
      assert.equals(5, #c:events())

      collectgarbage()
      collectgarbage()
      assert.is_nil(ref[1], "an idle, unreferenced client was not collected")
    end)

    it("is delivered by dn.pump alone", function()
      local ref = emit_and_drop(3)
      collectgarbage()
      collectgarbage()
      assert.is_true(helpers.pump_until(function() return #c:event_lines() == 3 end, 5))
      assert.is_true(helpers.pump_until(function() return dn.pump() == 0 end, 5))
      collectgarbage()
      collectgarbage()
      assert.is_nil(ref[1])
    end)

    it("is collected even when its on_error refers to it", function()
      local function make()
        local cl
        cl = dn.new(helpers.fast({
          endpoint = c.url,
          on_error = function() return cl:stats() end,
        }))
        assert(cl:emit("self_referencing"))
        return setmetatable({ cl }, { __mode = "v" })
      end
      local ref = make()
      assert.is_true(dn.flush(5))
      assert.equals(1, #c:events())
      collectgarbage()
      collectgarbage()
      assert.is_nil(ref[1], "the client is kept alive by its own on_error")
    end)
  end)

  describe("closing the Lua state with transfers in flight", function()
    local function child_script(ending)
      return ([[
        local cpath = os.getenv("DUKANEXT_CPATH")
        if cpath then package.cpath = cpath .. ";" .. package.cpath end
        local dn = require("dukanext")
        local url = %q
        local c = dn.new({ endpoint = url, timeout = 10, on_error = function() end })
        for i = 1, 3 do assert(c:emit("in_flight_at_exit", { i = i })) end
        -- A dropped client with work left, and the default client, too.
        assert(dn.new({ endpoint = url }):emit("dropped_at_exit"))
        dn.configure({ endpoint = url })
        assert(dn.emit("default_at_exit"))
        for _ = 1, 200 do
          if c:stats().in_flight == 3 then break end
          dn.flush(0.01)
        end
        dn.flush(0.2) -- the requests reach the server, which holds them
        io.write("in flight: ", c:stats().in_flight, "\n")
        io.flush()
        %s
      ]]):format(c.url, ending)
    end

    local endings = {
      ["os.exit(0, true)"] = "os.exit(0, true)",
      ["the end of the script"] = "",
    }
    for name, ending in pairs(endings) do
      it("cleans up on " .. name, function()
        c:plan({}, { delay = 1.5, status = 503 })
        local rc, output = run_lua(child_script(ending))
        assert.equals("in flight: 3\n", output)
        assert.equals(0, rc)
        -- Let the held requests end before the next test resets the collector.
        assert.is_true(c:wait_idle(within(4)), "the held requests were not answered")
      end)
    end
  end)

  if _VERSION >= "Lua 5.4" then
    it("closes a client held in a <close> variable", function()
      local scope = assert(load([[
        local dn, url = ...
        local c <close> = dn.new({ endpoint = url })
        assert(c:emit("never_sent"))
        return c
      ]]))
      local cl = scope(dn, c.url)
      assert.matches("closed", tostring(cl))
      assert.equals(1, cl:stats().cancelled)
      local ok, err = cl:emit("after_scope")
      assert.is_nil(ok)
      assert.matches("^CLOSED: ", err)
    end)
  else
    pending(CLOSE_VARIABLE)
  end

  it("shows the client's state in tostring", function()
    local cl = client()
    assert.matches("^dukanext%.client %(open%)", tostring(cl))
    cl:close()
    assert.matches("^dukanext%.client %(closed%)", tostring(cl))
  end)

  it("flushes nothing at once #timing", function()
    local t0 = now()
    local results = { dn.flush() }
    assert.same({ true }, results)
    assert(now() - t0 < within(0.05), "dn.flush() with nothing queued took " .. (now() - t0) .. " s")
  end)
end)
