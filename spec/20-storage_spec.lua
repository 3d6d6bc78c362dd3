-- The storage protocol, byte compatibility with the browser client, tampered and
-- failing storages, and the two storages the module ships.
local helpers = require("spec.helpers")
local cjson = require("cjson")

-- What the browser reference client keeps in localStorage.
local BROWSER_USER_ID = "0bc41c04-4eed-4aae-a318-4f9ab9b6f338-1759904642100"
local BROWSER_SESSION_ID = "SESSION-b0b13d41-7651-4ec3-87e2-77a6dc0aa60e-1770181330638"

local DEFAULT_TIMEOUT_MS = 1800 * 1000
-- Loose: the module and the spec read the same clock, but not at the same instant.
local MARGIN_MS = 50

local function browser_session_record(expires)
  return '{"id":"' .. BROWSER_SESSION_ID .. '","expires":' .. string.format("%d", expires) .. "}"
end

-- A storage that records the exact arguments of every call.
local function strict_storage(initial)
  local data, calls = {}, {}
  for k, v in pairs(initial or {}) do data[k] = v end
  local s = { data = data, calls = calls }
  function s.get(...)
    calls[#calls + 1] = { method = "get", n = select("#", ...), ... }
    return data[(...)]
  end
  function s.set(...)
    calls[#calls + 1] = { method = "set", n = select("#", ...), ... }
    local key, value = ...
    data[key] = value
  end
  return s
end

local function errors_recorder()
  local errors = {}
  return errors, function(err) errors[#errors + 1] = err end
end

local function codes(errors)
  local list = {}
  for i, err in ipairs(errors) do list[i] = err.code end
  return list
end

describe("storage", function()
  local dn, collector

  lazy_setup(function()
    dn = helpers.dn()
    collector = helpers.start_collector()
  end)

  lazy_teardown(function()
    if collector then collector:stop() end
  end)

  before_each(function()
    collector:reset()
  end)

  local function client(opts)
    opts = opts or {}
    opts.endpoint = opts.endpoint or collector.url
    return dn.new(helpers.fast(opts))
  end

  describe("protocol", function()
    it("calls storage.get(key) and storage.set(key, value) without self", function()
      local s = strict_storage()
      local c = client({ storage = s })
      c:get_user_id()
      c:get_session_id()
      assert.is_true(c:emit("page_view", { url = "/" }))

      assert.is_true(#s.calls > 0)
      for _, call in ipairs(s.calls) do
        if call.method == "get" then
          assert.are.equal(1, call.n)
        else
          assert.are.equal(2, call.n)
          assert.is_string(call[2])
        end
        assert.is_string(call[1])
      end
    end)

    it("uses exactly the keys dn_user_id and dn_session_id", function()
      local s = strict_storage()
      local c = client({ storage = s })
      c:get_user_id()
      c:get_session_id()
      assert.is_true(c:emit("page_view", { url = "/" }))

      local keys = {}
      for _, call in ipairs(s.calls) do keys[call[1]] = true end
      assert.same({ dn_user_id = true, dn_session_id = true }, keys)
      assert.are.equal(c:get_user_id(), s.data.dn_user_id)
    end)

    it("works with a storage whose get and set come from a metatable", function()
      local impl = { data = {} }
      function impl.get(key) return impl.data[key] end
      function impl.set(key, value) impl.data[key] = value end
      local s = setmetatable({}, { __index = impl })

      local errors, on_error = errors_recorder()
      local c = client({ storage = s, on_error = on_error })
      local id = c:get_user_id()
      assert.matches(helpers.USER_ID, id)
      assert.are.equal(id, impl.data.dn_user_id)
      assert.are.equal(id, c:get_user_id())
      local session_id = c:get_session_id()
      assert.are.equal(session_id, cjson.decode(impl.data.dn_session_id).id)

      -- The same object as a per-event storage.
      local visitor = setmetatable({}, { __index = impl })
      assert.is_true(c:emit("page_view", { url = "/meta" }, { storage = visitor }))
      assert.is_true(c:flush(5))
      -- Earlier tests' clients may deliver here too: pick this event out.
      local sent
      for _, body in ipairs(helpers.request_bodies(collector)) do
        if body.metadata.url == "/meta" then sent = body end
      end
      assert.are.equal(id, sent.userId)
      assert.same({}, codes(errors))
    end)
  end)

  describe("compatibility with the browser client", function()
    it("uses what the browser wrote as is", function()
      local s = helpers.recording_storage({
        dn_user_id = BROWSER_USER_ID,
        dn_session_id = browser_session_record(helpers.now_ms() + 10 * 60 * 1000),
      })
      local c = client({ storage = s })

      assert.are.equal(BROWSER_USER_ID, c:get_user_id())
      assert.are.equal(BROWSER_SESSION_ID, c:get_session_id())
      assert.is_true(c:emit("page_view", { url = "/from-browser" }))
      assert.is_true(c:flush(5))

      local body = helpers.request_bodies(collector)[1]
      assert.are.equal(BROWSER_USER_ID, body.userId)
      assert.are.equal(BROWSER_SESSION_ID, body.sessionId)
      assert.are.equal(BROWSER_USER_ID, s.data.dn_user_id)
      assert.are.equal(BROWSER_SESSION_ID, cjson.decode(s.data.dn_session_id).id)
    end)

    it("writes the user id as a bare string, as the browser does", function()
      local s = helpers.recording_storage()
      local id = client({ storage = s }):get_user_id()
      assert.are.equal(id, s.data.dn_user_id)
    end)

    it("writes the session record as the browser does: {id, expires = now + session_timeout}", function()
      local s = helpers.recording_storage()
      local c = client({ storage = s })
      local before = helpers.now_ms()
      local id = c:get_session_id()
      local after = helpers.now_ms()

      local raw = s.data.dn_session_id
      assert.is_string(raw)
      assert.matches('^{"id":"SESSION%-[%x%-]+%-%d+","expires":%d+}$', raw)
      local record = cjson.decode(raw)
      assert.same({ "expires", "id" }, (function()
        local keys = {}
        for k in pairs(record) do keys[#keys + 1] = k end
        table.sort(keys)
        return keys
      end)())
      assert.are.equal(id, record.id)
      assert.is_true(record.expires >= before + DEFAULT_TIMEOUT_MS - MARGIN_MS
        and record.expires <= after + DEFAULT_TIMEOUT_MS + MARGIN_MS,
        "expires " .. string.format("%d", record.expires) .. " is not now + 30 min")
    end)

    it("honours session_timeout in the record it writes", function()
      local s = helpers.recording_storage()
      local c = client({ storage = s, session_timeout = 90 })
      local before = helpers.now_ms()
      c:get_session_id()
      local after = helpers.now_ms()
      local expires = cjson.decode(s.data.dn_session_id).expires
      assert.is_true(expires >= before + 90000 - MARGIN_MS and expires <= after + 90000 + MARGIN_MS)
    end)
  end)

  describe("a tampered user id", function()
    local VALID = BROWSER_USER_ID
    local tampered = {
      { "an empty string", "" },
      { "a word", "hello" },
      { "a uuid without ms", "0bc41c04-4eed-4aae-a318-4f9ab9b6f338" },
      { "an empty ms", "0bc41c04-4eed-4aae-a318-4f9ab9b6f338-" },
      { "letters in the ms", "0bc41c04-4eed-4aae-a318-4f9ab9b6f338-17599x4642100" },
      { "a non-hex digit", "0bc41c04-4eed-4aae-a318-4f9ab9b6f33g-1759904642100" },
      { "misplaced dashes", "0bc41c044-eed-4aae-a318-4f9ab9b6f338-1759904642100" },
      { "a leading space", " " .. VALID },
      { "a trailing CR/LF", VALID .. "\r\n" },
      { "a CR/LF inside", "0bc41c04-4eed-4aae-a318-4f9ab9b6f338-17599\r\n04642100" },
      { "a header injection", VALID .. "\r\nSet-Cookie: x=1" },
      { "a NUL inside", "0bc41c04-4eed-4aae-a318-4f9ab9b6f338-17599\0" .. "04642100" },
      { "129 bytes", VALID .. string.rep("0", 129 - #VALID) },
      { "1 MB", VALID .. string.rep("1", 1024 * 1024) },
      { "1 MB of junk", string.rep("x", 1024 * 1024) },
    }

    for _, case in ipairs(tampered) do
      local name, value = case[1], case[2]
      it("with " .. name .. " is replaced and rewritten", function()
        local s = helpers.recording_storage({ dn_user_id = value })
        local c = client({ storage = s })
        local id = c:get_user_id()
        assert.are_not.equal(value, id)
        assert.matches(helpers.USER_ID, id)
        assert.are.equal(id, s.data.dn_user_id)
        assert.are.equal(id, c:get_user_id())

        assert.is_true(c:emit("page_view", { url = "/t" }))
        assert.is_true(c:flush(5))
        assert.are.equal(id, helpers.request_bodies(collector)[1].userId)
      end)
    end

    it("in upper-case hex is kept", function()
      local upper = "0BC41C04-4EED-4AAE-A318-4F9AB9B6F338-1759904642100"
      local s = helpers.recording_storage({ dn_user_id = upper })
      local c = client({ storage = s })
      assert.are.equal(upper, c:get_user_id())
      assert.are.equal(upper, s.data.dn_user_id)
    end)
  end)

  describe("a failing storage", function()
    local failing = {
      { "whose get raises", function()
        return { get = function() error("disk on fire") end, set = function() end }
      end },
      { "whose get returns a number", function()
        return { get = function() return 42 end, set = function() end }
      end },
      { "whose get returns a table", function()
        return { get = function() return {} end, set = function() end }
      end },
      { "whose get returns a boolean", function()
        return { get = function() return true end, set = function() end }
      end },
      { "whose set raises", function()
        return { get = function() return nil end, set = function() error("read-only") end }
      end },
    }

    for _, case in ipairs(failing) do
      local name, make = case[1], case[2]
      it(name .. " still gives stable ids, and STORAGE_ERROR only inside flush", function()
        local errors, on_error = errors_recorder()
        local c = client({ storage = make(), on_error = on_error })

        assert.is_true(c:emit("page_view", { url = "/one" }))
        local user_id = c:get_user_id()
        local session_id = c:get_session_id()
        assert.matches(helpers.USER_ID, user_id)
        assert.matches(helpers.SESSION_ID, session_id)
        for _ = 1, 3 do
          assert.are.equal(user_id, c:get_user_id())
          assert.are.equal(session_id, c:get_session_id())
        end
        assert.is_true(c:emit("page_view", { url = "/two" }))
        assert.are.equal(0, #errors, "on_error ran outside pump/flush")

        assert.is_true(c:flush(5))
        assert.is_true(#errors > 0, "no STORAGE_ERROR reported")
        for _, err in ipairs(errors) do
          assert.are.equal("STORAGE_ERROR", err.code)
          assert.is_string(err.message)
        end

        local bodies = helpers.request_bodies(collector)
        assert.are.equal(2, #bodies)
        for _, body in ipairs(bodies) do
          assert.are.equal(user_id, body.userId)
          assert.are.equal(session_id, body.sessionId)
        end
      end)
    end

    it("reports STORAGE_ERROR from dn.pump()", function()
      local errors, on_error = errors_recorder()
      local c = client({ storage = failing[1][2](), on_error = on_error })
      c:get_user_id()
      assert.are.equal(0, #errors)
      helpers.pump_until(function() return #errors > 0 end, 2)
      assert.are.equal("STORAGE_ERROR", errors[1] and errors[1].code)
    end)

    it("keeps one fallback id per storage object", function()
      local c = client({})
      local a, b = failing[1][2](), failing[1][2]()
      local id_a = c:get_user_id(a)
      assert.are.equal(id_a, c:get_user_id(a))
      assert.are_not.equal(id_a, c:get_user_id(b))
    end)

    -- One storage object serving many visitors (a cookie jar read through the current
    -- request): what was kept for the visitor whose get failed must not become the
    -- id of the next visitor, whose get simply finds nothing.
    it("never hands the id kept for one visitor to the next one of a shared storage", function()
      local c = client({})
      local fail_next = true
      local shared = {
        get = function()
          if fail_next then fail_next = false; error("cookie header unreadable") end
          return nil
        end,
        set = function() end,
      }
      local first_user, first_session = c:get_user_id(shared), nil
      fail_next = true
      first_session = c:get_session_id(shared)
      local next_user, next_session = c:get_user_id(shared), c:get_session_id(shared)
      assert.matches(helpers.USER_ID, next_user)
      assert.are_not.equal(first_user, next_user)
      assert.are_not.equal(first_session, next_session)
    end)

    it("keeps the id of a storage whose set failed, until a set works again", function()
      local c = client({})
      local set_works = false
      local kept = {}
      local storage = {
        get = function(key) return kept[key] end,
        set = function(key, value)
          if not set_works then error("read-only") end
          kept[key] = value
        end,
      }
      local id = c:get_user_id(storage)
      assert.are.equal(id, c:get_user_id(storage))
      set_works = true
      assert.are.equal(id, c:get_user_id(storage)) -- written through at last
      assert.are.equal(id, kept.dn_user_id)
      kept.dn_user_id = nil -- the visitor cleared the cookie: a new visitor
      assert.are_not.equal(id, c:get_user_id(storage))
    end)
  end)

  describe("fields.storage", function()
    it("makes each event a visitor of its own and leaves the client's storage alone", function()
      local own = helpers.recording_storage()
      local alice, bob = helpers.recording_storage(), helpers.recording_storage()
      local c = client({ storage = own })

      assert.is_true(c:emit("page_view", { url = "/a1" }, { storage = alice }))
      assert.is_true(c:emit("page_view", { url = "/b1" }, { storage = bob }))
      assert.is_true(c:emit("add_to_cart", { url = "/a2" }, { storage = alice }))
      assert.is_true(c:flush(5))

      local bodies = helpers.request_bodies(collector)
      assert.are.equal(3, #bodies)
      assert.matches(helpers.USER_ID, bodies[1].userId)
      assert.are.equal(alice.data.dn_user_id, bodies[1].userId)
      assert.are.equal(bob.data.dn_user_id, bodies[2].userId)
      assert.are.equal(alice.data.dn_user_id, bodies[3].userId)
      assert.are_not.equal(bodies[1].userId, bodies[2].userId)
      assert.are_not.equal(bodies[1].sessionId, bodies[2].sessionId)
      assert.are.equal(bodies[1].sessionId, bodies[3].sessionId)
      assert.same({}, own.calls)
    end)
  end)

  describe("dn.memory_storage()", function()
    it("gets, sets and deletes", function()
      local s = dn.memory_storage()
      assert.is_function(s.get)
      assert.is_function(s.set)
      assert.is_nil(s.get("k"))
      s.set("k", "v")
      assert.are.equal("v", s.get("k"))
      s.set("k", "w")
      assert.are.equal("w", s.get("k"))
      s.set("k", nil)
      assert.is_nil(s.get("k"))
    end)

    it("keeps each storage apart", function()
      local a, b = dn.memory_storage(), dn.memory_storage()
      a.set("k", "a")
      assert.is_nil(b.get("k"))
    end)
  end)

  describe("dn.file_storage(path)", function()
    local dir, path

    before_each(function()
      dir = helpers.tmpdir()
      path = dir .. "/dukanext.json"
    end)

    after_each(function()
      helpers.remove_tree(dir)
    end)

    it("gets and sets", function()
      local s = dn.file_storage(path)
      assert.is_nil(s.get("k"))
      s.set("k", "v")
      assert.are.equal("v", s.get("k"))
      s.set("k", "w\n\"quoted\"")
      assert.are.equal("w\n\"quoted\"", s.get("k"))
    end)

    it("keeps the ids across a restart", function()
      local c1 = client({ storage = dn.file_storage(path) })
      local user_id, session_id = c1:get_user_id(), c1:get_session_id()
      c1:close()
      c1 = nil
      collectgarbage()

      local c2 = client({ storage = dn.file_storage(path) })
      assert.are.equal(user_id, c2:get_user_id())
      assert.are.equal(session_id, c2:get_session_id())
    end)

    it("writes a JSON object with both keys, mode 0600, and no temp file left", function()
      local c = client({ storage = dn.file_storage(path) })
      local user_id, session_id = c:get_user_id(), c:get_session_id()
      for i = 1, 5 do assert.is_true(c:emit("page_view", { url = "/" .. i })) end

      local raw = helpers.read_file(path)
      assert.is_string(raw)
      local content = cjson.decode(raw)
      assert.are.equal(user_id, content.dn_user_id)
      assert.are.equal(session_id, cjson.decode(content.dn_session_id).id)
      local keys = {}
      for k in pairs(content) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same({ "dn_session_id", "dn_user_id" }, keys)

      assert.are.equal("600", helpers.file_mode(path))
      assert.same({ "dukanext.json" }, helpers.dir_entries(dir))
      assert.is_true(c:flush(5))
    end)

    it("keeps keys it does not own", function()
      local s = dn.file_storage(path)
      s.set("theme", "dark")
      client({ storage = s }):get_user_id()
      assert.are.equal("dark", dn.file_storage(path).get("theme"))
    end)

    it("sees the writes of another file_storage on the same path", function()
      local a, b = dn.file_storage(path), dn.file_storage(path)
      a.set("one", "1")
      assert.are.equal("1", b.get("one"))
      b.set("two", "2")
      assert.are.equal("2", a.get("two"))
      assert.are.equal("1", a.get("one"))
      a.set("one", "uno")
      assert.are.equal("uno", b.get("one"))
      assert.are.equal("2", b.get("two"))

      local ca, cb = client({ storage = dn.file_storage(path) }), client({ storage = dn.file_storage(path) })
      local user_id = ca:get_user_id()
      assert.are.equal(user_id, cb:get_user_id())
      local session_id = cb:get_session_id()
      assert.are.equal(session_id, ca:get_session_id())
      assert.same({ "dukanext.json" }, helpers.dir_entries(dir))
    end)

    it("in a missing folder raises at once, naming the folder", function()
      local ok, err = pcall(dn.file_storage, dir .. "/missing/dukanext.json")
      assert.is_false(ok)
      assert.matches("dukanext: file_storage: the folder '" .. dir:gsub("%p", "%%%0")
        .. "/missing' of '.*/missing/dukanext%.json' does not exist", err)
      assert.same({}, helpers.dir_entries(dir))
    end)

    it("whose folder is removed later reports STORAGE_ERROR and still answers stable ids", function()
      local errors, on_error = errors_recorder()
      os.execute("mkdir " .. helpers.quote(dir .. "/missing"))
      local storage = dn.file_storage(dir .. "/missing/dukanext.json")
      os.execute("rmdir " .. helpers.quote(dir .. "/missing"))
      local c = client({ storage = storage, on_error = on_error })
      local user_id, session_id = c:get_user_id(), c:get_session_id()
      assert.matches(helpers.USER_ID, user_id)
      assert.matches(helpers.SESSION_ID, session_id)
      assert.are.equal(user_id, c:get_user_id())
      assert.are.equal(session_id, c:get_session_id())
      assert.is_true(c:emit("page_view", { url = "/nowhere" }))
      assert.are.equal(0, #errors)

      assert.is_true(c:flush(5))
      assert.is_true(#errors > 0)
      assert.are.equal("STORAGE_ERROR", errors[1].code)
      assert.are.equal(user_id, helpers.request_bodies(collector)[1].userId)
      assert.same({}, helpers.dir_entries(dir))
    end)
  end)
end)
