-- Ids: the anonymous user id, the session id and the per-event idempotency key.
local helpers = require("spec.helpers")

local UUID = helpers.UUID

-- "<uuid>-<ms>" split into its parts, or nil when it has another shape.
local function split_user_id(id)
  return id:match("^(" .. UUID .. ")%-(%d+)$")
end

local function split_session_id(id)
  return id:match("^SESSION%-(" .. UUID .. ")%-(%d+)$")
end

-- A storage that never keeps anything: every call makes a new id.
local function forgetful_storage()
  return { get = function() return nil end, set = function() end }
end

describe("ids", function()
  local dn

  lazy_setup(function()
    dn = helpers.dn()
  end)

  describe("get_user_id", function()
    it("answers <uuid v4, lowercase>-<wall-clock ms>", function()
      local c = dn.new({})
      local before = helpers.now_ms()
      local id = c:get_user_id()
      local after = helpers.now_ms()

      assert.is_string(id)
      local uuid, ms = split_user_id(id)
      assert.is_not_nil(uuid, "not <uuid>-<ms>: " .. id)
      assert.are.equal(36, #uuid)
      assert.are.equal("4", uuid:sub(15, 15))
      assert.matches("^[89ab]$", uuid:sub(20, 20))
      assert.is_nil(id:find("%u"), "uppercase in " .. id)
      assert.is_true(tonumber(ms) >= before and tonumber(ms) <= after,
        ms .. " is not within [" .. before .. ", " .. after .. "]")
    end)

    it("answers the same id on every call with the same storage", function()
      local c = dn.new({})
      local first = c:get_user_id()
      for _ = 1, 5 do
        assert.are.equal(first, c:get_user_id())
      end
      local storage = dn.memory_storage()
      local other = c:get_user_id(storage)
      assert.are.equal(other, c:get_user_id(storage))
    end)

    it("answers the same id through the module function given a storage", function()
      local storage = dn.memory_storage()
      local id = dn.get_user_id(storage)
      assert.matches(helpers.USER_ID, id)
      assert.are.equal(id, dn.get_user_id(storage))
      assert.are.equal(id, storage.get("dn_user_id"))
    end)

    it("answers a new id for a new storage", function()
      local c = dn.new({})
      local own = c:get_user_id()
      local a = c:get_user_id(dn.memory_storage())
      local b = c:get_user_id(dn.memory_storage())
      assert.are_not.equal(own, a)
      assert.are_not.equal(a, b)
      assert.are.equal(own, c:get_user_id())
      -- Two clients, each with its own default storage, are two visitors.
      assert.are_not.equal(own, dn.new({}):get_user_id())
    end)

    it("makes 100 000 distinct ids, all of the right shape", function()
      local c = dn.new({ storage = forgetful_storage() })
      local seen, count = {}, 0
      local variants = {}
      for _ = 1, 100000 do
        local id = c:get_user_id()
        local uuid = split_user_id(id)
        if not uuid then error("not <uuid>-<ms>: " .. id) end
        if seen[uuid] then error("uuid repeated: " .. id) end
        seen[uuid] = true
        count = count + 1
        variants[uuid:sub(20, 20)] = true
      end
      assert.are.equal(100000, count)
      -- The variant keeps two random bits: all four values show up.
      assert.same({ ["8"] = true, ["9"] = true, a = true, b = true }, variants)
    end)
  end)

  describe("get_session_id", function()
    it("answers SESSION-<uuid v4, lowercase>-<wall-clock ms>", function()
      local c = dn.new({})
      local before = helpers.now_ms()
      local id = c:get_session_id()
      local after = helpers.now_ms()

      local uuid, ms = split_session_id(id)
      assert.is_not_nil(uuid, "not SESSION-<uuid>-<ms>: " .. id)
      assert.are.equal("4", uuid:sub(15, 15))
      assert.matches("^[89ab]$", uuid:sub(20, 20))
      assert.is_nil(uuid:find("%u"), "uppercase in " .. id)
      assert.is_true(tonumber(ms) >= before and tonumber(ms) <= after,
        ms .. " is not within [" .. before .. ", " .. after .. "]")
    end)

    it("uses a uuid of its own, not the user id's", function()
      local c = dn.new({})
      local user_uuid = split_user_id(c:get_user_id())
      local session_uuid = split_session_id(c:get_session_id())
      assert.are_not.equal(user_uuid, session_uuid)
    end)

    it("answers a new session for a new storage", function()
      local c = dn.new({})
      assert.are_not.equal(c:get_session_id(dn.memory_storage()), c:get_session_id(dn.memory_storage()))
    end)
  end)

  describe("idempotency keys", function()
    local collector

    lazy_setup(function()
      collector = helpers.start_collector()
    end)

    lazy_teardown(function()
      if collector then collector:stop() end
    end)

    before_each(function()
      collector:reset()
    end)

    it("are uuid v4, lowercase, one per event", function()
      local c = dn.new(helpers.fast({ endpoint = collector.url }))
      for i = 1, 5 do
        assert.is_true(c:emit("page_view", { url = "/p/" .. i }))
      end
      assert.is_true(c:flush(5))

      local requests = collector:requests()
      assert.are.equal(5, #requests)
      local keys = {}
      for _, rec in ipairs(requests) do
        local key = rec.headers.idempotency_key
        assert.is_string(key)
        assert.matches("^" .. UUID .. "$", key)
        assert.is_nil(key:find("%u"), "uppercase in " .. key)
        assert.is_nil(keys[key], "idempotency key repeated: " .. key)
        keys[key] = true
      end
    end)

    it("differ for two events with identical bodies", function()
      local c = dn.new(helpers.fast({ endpoint = collector.url }))
      assert.is_true(c:emit("page_view", { url = "/same" }))
      assert.is_true(c:emit("page_view", { url = "/same" }))
      assert.is_true(c:flush(5))

      local requests = collector:requests()
      assert.are.equal(2, #requests)
      assert.are.equal(requests[1].body, requests[2].body)
      assert.are_not.equal(requests[1].headers.idempotency_key, requests[2].headers.idempotency_key)
    end)
  end)
end)
