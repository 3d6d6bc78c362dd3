-- Hostile hosts: callbacks (storage get/set, on_error) that raise, try to yield, or
-- call back into the module (emit, pump, flush, close), clients dropped and collected
-- while their callback runs, Lua code that re-enters emit while it builds a body, and
-- fork(). None of it may crash, leak or lose an event: every accepted event is
-- delivered, failed with a report, or cancelled by an explicit close.
local helpers = require("spec.helpers")

local dn = helpers.dn()
local within = helpers.within

local function pack(...)
  return { n = select("#", ...), ... }
end

local to_integer = math.tointeger or function(x) return x end

-- The events the collector recorded, as "name:tag" strings, sorted.
local function arrived(c)
  local list = {}
  for i, e in ipairs(c:events()) do
    local tag = e.metadata.tag
    if type(tag) == "number" then tag = to_integer(tag) or tag end
    list[i] = e.event .. ":" .. tostring(tag)
  end
  table.sort(list)
  return list
end

local function sorted(list)
  table.sort(list)
  return list
end

-- What a callback does once, when it is armed. ctx.client() is its own client (nil
-- once collected), ctx.other another client of the same state. `got` keeps what the
-- module answered inside the callback; check() judges it.
local BEHAVIOURS = {
  { name = "raises",
    run = function() error("hostile callback") end,
    storage_error = "raised: [^\n]*hostile callback" },
  { name = "tries to yield", yields = true,
    run = function() coroutine.yield("from a callback") end,
    storage_error = "raised: [^\n]*yield across" },
  { name = "emits on its own client", inner = true,
    run = function(ctx) return ctx.client():emit("inner", { tag = "own" }) end,
    check = function(got) assert.same({ n = 1, true }, got) end },
  { name = "emits on another client", inner_other = true,
    run = function(ctx) return ctx.other:emit("inner", { tag = "other" }) end,
    check = function(got) assert.same({ n = 1, true }, got) end },
  { name = "calls dn.pump()",
    run = function() return dn.pump() end,
    check = function(got)
      assert.equals(1, got.n)
      assert.is_number(got[1])
    end },
  { name = "flushes its own client",
    run = function(ctx) return ctx.client():flush(within(3)) end,
    check = function(got) assert.same({ n = 1, true }, got) end },
  { name = "flushes its own client with flush(0)",
    run = function(ctx) return ctx.client():flush(0) end,
    check = function(got)
      assert(got[1] == true or (got[2] == "TIMEOUT" and type(got[3]) == "number"),
        "flush(0) answered " .. tostring(got[1]) .. ", " .. tostring(got[2]))
    end },
  { name = "flushes every client (dn.flush)",
    run = function() return dn.flush(within(3)) end,
    check = function(got) assert.same({ n = 1, true }, got) end },
  { name = "closes its own client", closes = true,
    run = function(ctx) return ctx.client():close() end,
    check = function(got)
      assert.equals(1, got.n)
      assert.equals(1, got[1])
    end },
  { name = "drops its client and collects garbage", drops = true,
    run = function()
      collectgarbage()
      collectgarbage()
    end },
}

describe("hostile hosts", function()
  local c, other
  local clients = {}

  lazy_setup(function()
    c = helpers.start_collector()
  end)

  lazy_teardown(function()
    if c then c:stop() end
  end)

  before_each(function()
    c:reset()
    other = dn.new(helpers.fast({ endpoint = c.url }))
    clients[#clients + 1] = other
  end)

  after_each(function()
    for i = #clients, 1, -1 do
      clients[i]:close()
      clients[i] = nil
    end
    -- Whatever a test left queued anywhere (dropped clients) is done before the next,
    -- and requests the collector held are logged before it is reset.
    assert.is_true(dn.flush(within(5)))
    assert.is_true(c:wait_idle(within(5)), "the collector still holds requests")
  end)

  -- Builds the client under test; answers a context whose client() reaches it through a
  -- weak reference, and the client itself unless the test drops it.
  local function make_context(opts, keep)
    local cl = dn.new(helpers.fast(opts))
    local ref = setmetatable({ cl }, { __mode = "v" })
    local ctx = { ref = ref, other = other }
    function ctx.client() return ref[1] end
    if keep then
      clients[#clients + 1] = cl
      return ctx, cl
    end
    return ctx
  end

  -- Runs fn(...) as the host would: in a coroutine when the callback will try to yield
  -- (its yield must fail inside the module, not suspend the host).
  local function host_call(b, fn, ...)
    if not b.yields then return pack(fn(...)) end
    local co = coroutine.create(function(...) return pack(fn(...)) end)
    local resumed = pack(coroutine.resume(co, ...))
    assert.is_true(resumed[1], tostring(resumed[2]))
    assert.equals("dead", coroutine.status(co), "the host's coroutine was suspended by a callback")
    return resumed[2]
  end

  for _, which in ipairs({ "get", "set" }) do
    -- get runs first in emit (the user id); set last (the session record).
    local armed_key = which == "get" and "dn_user_id" or "dn_session_id"
    describe("a storage " .. which .. " that", function()
      for _, b in ipairs(BEHAVIOURS) do
        it(b.name, function()
          local memory = dn.memory_storage()
          local armed, got = false, nil
          local errors = {}
          local ctx
          local storage = { get = memory.get, set = memory.set }
          storage[which] = function(key, ...)
            if armed and key == armed_key then
              armed = false
              got = pack(b.run(ctx))
            end
            return memory[which](key, ...)
          end
          local cl
          ctx, cl = make_context({
            endpoint = c.url, storage = storage,
            on_error = function(err) errors[#errors + 1] = err end,
          }, not b.drops)

          -- One event already queued when the callback runs.
          assert.is_true(ctx.client():emit("before", { tag = "before" }))
          armed = true
          local result = host_call(b, function()
            return ctx.client():emit("outer", { tag = "outer", n = 42, nested = { list = { 1, 2, 3 } } })
          end)
          assert.is_false(armed, "the callback did not run")
          if b.check then b.check(got) end

          if b.closes then
            assert.same({ n = 2, nil, "CLOSED: the client is closed" }, result)
          else
            assert.same({ n = 1, true }, result)
          end
          assert.is_true(dn.flush(within(5)))

          local expected = {}
          if not b.closes then
            expected = { "before:before", "outer:outer" }
            if b.inner then expected[#expected + 1] = "inner:own" end
            if b.inner_other then expected[#expected + 1] = "inner:other" end
          end
          assert.same(sorted(expected), arrived(c))
          -- The outer event is intact, whatever ran inside its emit.
          for _, e in ipairs(c:events()) do
            if e.event == "outer" then
              assert.same({ tag = "outer", n = 42, nested = { list = { 1, 2, 3 } } }, e.metadata)
            end
          end

          if b.storage_error then
            assert.equals(1, #errors)
            assert.equals("STORAGE_ERROR", errors[1].code)
            assert.matches('^storage%.' .. which .. '%("' .. armed_key .. '"%) ' .. b.storage_error,
              errors[1].message)
          elseif not b.closes then
            assert.same({}, errors)
          end

          if cl then
            local s = cl:stats()
            local accepted = b.closes and 1 or (b.inner and 3 or 2)
            assert.equals(0, s.queued + s.in_flight)
            assert.equals(accepted, s.sent + s.failed + s.cancelled)
            assert.equals(b.closes and 1 or 0, s.cancelled)
          else
            collectgarbage()
            collectgarbage()
            assert.is_nil(ctx.ref[1], "the dropped client was not collected once idle")
          end
        end)
      end
    end)
  end

  describe("an on_error that", function()
    for _, b in ipairs(BEHAVIOURS) do
      it(b.name, function()
        -- "doomed" fails for good; "queued" waits behind it (one slot) and is in
        -- flight, held by the collector, while on_error runs.
        c:plan({ { status = 400, code = "INVALID_EVENT" }, { delay = 0.3 } })
        local armed, got = true, nil
        local reports = {}
        local ctx
        local cl
        ctx, cl = make_context({
          endpoint = c.url, max_in_flight = 1,
          on_error = function(err)
            reports[#reports + 1] = err.code .. ":" .. tostring(err.event)
            if armed then
              armed = false
              got = pack(b.run(ctx))
            end
          end,
        }, not b.drops)
        assert.is_true(ctx.client():emit("doomed", { tag = "doomed" }))
        assert.is_true(ctx.client():emit("queued", { tag = "queued" }))

        local result = host_call(b, dn.flush, within(5))
        assert.same({ n = 1, true }, result)
        assert.is_false(armed, "on_error did not run")
        if b.check then b.check(got) end
        assert.same({ "INVALID_EVENT:doomed" }, reports)

        -- The held request is logged when the collector answers it, cancelled or not.
        assert.is_true(c:wait_idle(within(3)), "the held request was not answered")
        assert.is_true(dn.flush(within(5)))
        local expected = { "queued:queued" }
        if b.inner then expected[#expected + 1] = "inner:own" end
        if b.inner_other then expected[#expected + 1] = "inner:other" end
        if b.closes then
          -- Cancelled in flight: the collector may still have taken it (once its bytes
          -- were written, nginx reads them a moment later); nothing else went.
          assert.is_true(c:wait_quiet(0.2, within(5)), "the collector still holds requests")
          local list = arrived(c)
          assert(#list <= 1 and (list[1] == nil or list[1] == "queued:queued"), table.concat(list, ","))
        else
          assert.same(sorted(expected), arrived(c))
        end

        if cl then
          local s = cl:stats()
          local accepted = b.inner and 3 or 2
          assert.equals(0, s.queued + s.in_flight)
          assert.equals(accepted, s.sent + s.failed + s.cancelled)
          assert.equals(1, s.failed)
          assert.equals(b.closes and 1 or 0, s.cancelled)
        else
          collectgarbage()
          collectgarbage()
          assert.is_nil(ctx.ref[1], "the dropped client was not collected once idle")
        end
      end)
    end
  end)

  it("may not re-enter emit while it builds a body: a hook that emits leaves both events intact", function()
    -- A profiler's call hook (or a finalizer at an allocation) runs Lua code between
    -- the last storage call of emit and the encoding of its body. Emitting from there
    -- must not change the event being built.
    local visitor, bystander = dn.memory_storage(), dn.memory_storage()
    local armed, inner = false, nil
    local cl = dn.new(helpers.fast({ endpoint = c.url }))
    clients[#clients + 1] = cl
    local user, other_user = cl:get_user_id(visitor), cl:get_user_id(bystander)
    local storage = {
      get = visitor.get,
      set = function(key, value)
        visitor.set(key, value)
        if key == "dn_session_id" then armed = true end
      end,
    }
    debug.sethook(function()
      if armed then
        armed = false
        inner = pack(cl:emit("from_hook", { tag = "hook" }, { storage = bystander }))
      end
    end, "c")
    local ok, result = pcall(function()
      return pack(cl:emit("outer", { tag = "outer" }, { storage = storage, referrerUrl = "https://r.example/" }))
    end)
    debug.sethook()
    assert.is_true(ok, tostring(result))
    assert.same({ n = 1, true }, result)
    assert.same({ n = 1, true }, inner)
    assert.is_true(cl:flush(within(5)))

    local by_event = {}
    for _, e in ipairs(c:events()) do by_event[e.event] = e end
    assert.same({ "from_hook:hook", "outer:outer" }, arrived(c))
    assert.equals(user, by_event.outer.userId)
    assert.equals("https://r.example/", by_event.outer.referrerUrl)
    assert.equals(other_user, by_event.from_hook.userId)
    assert.are_not.equal("https://r.example/", by_event.from_hook.referrerUrl)
  end)

  describe("after fork()", function()
    local posix

    local posix_error
    lazy_setup(function()
      posix, posix_error = helpers.load_posix()
    end)

    -- Forks; the child runs child(write) under pcall and leaves with _exit (never
    -- through busted). Answers the child's exit status and what it wrote.
    local function fork(child)
      local rfd, wfd = posix.pipe()
      io.stdout:flush()
      io.stderr:flush()
      local pid = assert(posix.fork())
      if pid == 0 then
        local ok, err = pcall(child, function(s) posix.write(wfd, s) end)
        if not ok then posix.write(wfd, "\nCHILD ERROR: " .. tostring(err)) end
        posix._exit(ok and 0 or 1)
      end
      posix.close(wfd)
      local chunks = {}
      repeat
        local chunk = posix.read(rfd, 65536)
        chunks[#chunks + 1] = chunk
      until chunk == nil or chunk == ""
      posix.close(rfd)
      return posix.waitpid(pid), table.concat(chunks)
    end

    -- Under valgrind the child's exit status also carries its leak report, which
    -- includes the parent's handles the child leaves alone on purpose.
    local function under_valgrind()
      local maps = helpers.read_file("/proc/self/maps") or ""
      return maps:find("vgpreload", 1, true) ~= nil
    end

    local function assert_child_ok(status, out)
      assert.is_nil(out:find("CHILD ERROR", 1, true), out)
      if not under_valgrind() then assert.equals(0, status, out) end
    end

    -- Requests per Idempotency-Key of one event name, and their attempt headers.
    local function keys_of(name)
      local keys, attempts = {}, {}
      for _, r in ipairs(c:requests()) do
        if helpers.decode(r.body).event == name then
          keys[r.headers.idempotency_key] = (keys[r.headers.idempotency_key] or 0) + 1
          attempts[#attempts + 1] = r.headers.attempt
        end
      end
      return keys, attempts
    end

    local function count(keys)
      local distinct, total = 0, 0
      for _, n in pairs(keys) do
        distinct, total = distinct + 1, total + n
      end
      return distinct, total
    end

    -- The parent's client with `n` events in flight, held by the collector.
    local function parent_in_flight(n, delay)
      delay = delay or 0.5
      local held = {}
      for i = 1, n do held[i] = { delay = delay } end
      c:plan(held)
      local cl = dn.new(helpers.fast({ endpoint = c.url }))
      clients[#clients + 1] = cl
      local arrived = #c:arrivals()
      for i = 1, n do assert.is_true(cl:emit("parent_pending", { tag = i })) end
      assert.is_true(helpers.pump_until(function() return cl:stats().in_flight == n end, within(3)))
      -- The requests reach nginx, which holds them.
      assert.is_true(helpers.pump_until(function() return #c:arrivals() == arrived + n end, within(3)))
      return cl
    end

    it("gives a child that emits a fresh start, and nothing is sent twice", function()
      if not posix then return pending(posix_error) end
      local cl = dn.new(helpers.fast({ endpoint = c.url }))
      clients[#clients + 1] = cl
      assert.is_true(cl:emit("parent_before", { tag = 0 }))
      assert.is_true(cl:flush(within(5)))
      cl:close()
      cl = parent_in_flight(5)
      -- And three more, queued but not started when the process forks.
      for i = 1, 3 do assert.is_true(cl:emit("parent_queued", { tag = i })) end

      local status, out = fork(function(write)
        for i = 1, 3 do assert(cl:emit("child", { tag = i }) == true) end
        local s = cl:stats()
        write(("accepted queued=%d in_flight=%d\n"):format(s.queued, s.in_flight))
        local flushed = cl:flush(5)
        s = cl:stats()
        write(("flushed=%s sent=%d failed=%d retries=%d\n"):format(tostring(flushed), s.sent, s.failed, s.retries))
      end)
      assert_child_ok(status, out)
      -- The child's client holds its own three events only.
      assert.matches("accepted queued=3 in_flight=0\n", out, 1, true)
      assert.matches("flushed=true sent=3 failed=0 retries=0\n", out, 1, true)

      -- The parent keeps working: its held events arrive, then new ones.
      assert.is_true(cl:flush(within(5)))
      assert.is_true(cl:emit("parent_after", { tag = 0 }))
      assert.is_true(cl:flush(within(5)))
      local s = cl:stats()
      assert.equals(9, s.sent)
      assert.equals(0, s.retries)

      assert.same(sorted({
        "child:1", "child:2", "child:3", "parent_after:0", "parent_before:0",
        "parent_queued:1", "parent_queued:2", "parent_queued:3",
        "parent_pending:1", "parent_pending:2", "parent_pending:3", "parent_pending:4", "parent_pending:5",
      }), arrived(c))
      -- Each event of the parent's went out once, by the parent: one request per key.
      local keys, attempts = keys_of("parent_pending")
      assert.same({ 5, 5 }, { count(keys) })
      assert.same({ "1", "1", "1", "1", "1" }, attempts)
      assert.same({ 3, 3 }, { count((keys_of("parent_queued"))) })
      assert.same({ 3, 3 }, { count((keys_of("child"))) })
      assert.equals(13, #c:requests())
    end)

    it("gives a child whose first calls are stats() and close() nothing of the parent's", function()
      if not posix then return pending(posix_error) end
      local cl = parent_in_flight(5, 1)

      local status, out = fork(function(write)
        local s = cl:stats()
        write(("stats queued=%d in_flight=%d\n"):format(s.queued, s.in_flight))
        write(("close=%d\n"):format(cl:close()))
        local own = dn.new({ endpoint = c.url })
        assert(own:emit("child", { tag = 1 }) == true)
        write(("flushed=%s\n"):format(tostring(own:flush(5))))
      end)
      assert_child_ok(status, out)
      assert.is_true(cl:flush(within(5)))
      local s = cl:stats()
      local keys, attempts = keys_of("parent_pending")
      -- Gathered, so that one run shows every way the child reached the parent.
      assert.same({
        child = "stats queued=0 in_flight=0\nclose=0\nflushed=true\n",
        -- The parent's transfers were not touched: each answered on its first attempt.
        parent = { sent = 5, retries = 0, keys = { 5, 5 }, attempts = { "1", "1", "1", "1", "1" } },
        arrived = sorted({
          "child:1", "parent_pending:1", "parent_pending:2", "parent_pending:3",
          "parent_pending:4", "parent_pending:5",
        }),
      }, {
        child = out,
        parent = { sent = s.sent, retries = s.retries, keys = { count(keys) }, attempts = attempts },
        arrived = arrived(c),
      })
    end)

    it("lets a child close its Lua state without cancelling the parent's transfers", function()
      if not posix then return pending(posix_error) end
      local cl = parent_in_flight(5)

      local status, out = fork(function(write)
        -- The collector belongs to the parent: the child's state must not stop it.
        c.stopped = true
        write("closing\n")
        os.exit(0, true) -- lua_close: every client and the hub are collected
      end)
      assert.equals("closing\n", out)
      -- Also under ASan and valgrind: their leak check decides the child's status, and
      -- a child that closes its state must free what it holds (the parent's handles too).
      assert.equals(0, status)

      assert.is_true(cl:flush(within(5)))
      local s = cl:stats()
      assert.equals(5, s.sent)
      assert.equals(0, s.retries)
      local _, attempts = keys_of("parent_pending")
      assert.same({ "1", "1", "1", "1", "1" }, attempts)
    end)
  end)
end)
