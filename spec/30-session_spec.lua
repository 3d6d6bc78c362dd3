-- Sessions: alive, expired and corrupt records, session_timeout, and the first page.
local helpers = require("spec.helpers")
local cjson = require("cjson")

local VALID_ID = "SESSION-b0b13d41-7651-4ec3-87e2-77a6dc0aa60e-1770181330638"
local DEFAULT_TIMEOUT_MS = 1800 * 1000
local MARGIN_MS = 50

local function record(fields)
  return cjson.encode(fields)
end

local function read_record(storage)
  local raw = storage.data.dn_session_id
  assert.is_string(raw, "no session record written")
  return cjson.decode(raw), raw
end

-- Asserts that expires lies in [before + ttl, after + ttl], give or take the margin.
local function assert_expires(expires, before, after, ttl_ms)
  assert.is_number(expires)
  assert.is_true(expires >= before + ttl_ms - MARGIN_MS and expires <= after + ttl_ms + MARGIN_MS,
    string.format("expires %d is not within now + %d ms [%d, %d]", expires, ttl_ms,
      before + ttl_ms, after + ttl_ms))
end

describe("sessions", function()
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
    opts.endpoint = collector.url
    return dn.new(helpers.fast(opts))
  end

  -- Emits, delivers and answers the body the collector received.
  local function emit_and_read(c, event, metadata, fields)
    local before = #collector:requests()
    assert.is_true(c:emit(event, metadata, fields))
    assert.is_true(c:flush(5))
    local bodies = helpers.request_bodies(collector)
    assert.are.equal(before + 1, #bodies)
    return bodies[#bodies]
  end

  describe("an alive record", function()
    it("keeps its id and moves expires to now + timeout on every get_session_id", function()
      local s = helpers.recording_storage({
        dn_session_id = record({ id = VALID_ID, expires = helpers.now_ms() + 60000 }),
      })
      local c = client({ storage = s })
      for _ = 1, 3 do
        local before = helpers.now_ms()
        assert.are.equal(VALID_ID, c:get_session_id())
        local after = helpers.now_ms()
        local rec = read_record(s)
        assert.are.equal(VALID_ID, rec.id)
        assert_expires(rec.expires, before, after, DEFAULT_TIMEOUT_MS)
        helpers.sleep(0.01)
      end
    end)

    it("keeps its id and moves expires to now + timeout on every emit", function()
      local s = helpers.recording_storage({
        dn_session_id = record({ id = VALID_ID, expires = helpers.now_ms() + 5000 }),
      })
      local c = client({ storage = s, session_timeout = 120 })
      for i = 1, 3 do
        local before = helpers.now_ms()
        assert.is_true(c:emit("page_view", { n = i }))
        local after = helpers.now_ms()
        local rec, raw = read_record(s)
        assert_expires(rec.expires, before, after, 120000)
        -- The record the browser writes, byte for byte, also when emit rewrites only
        -- the expiry of the record it wrote before.
        assert.are.equal('{"id":"' .. VALID_ID .. '","expires":' .. string.format("%d", rec.expires) .. "}", raw)
        helpers.sleep(0.01)
      end
      assert.is_true(c:flush(5))
      for _, body in ipairs(helpers.request_bodies(collector)) do
        assert.are.equal(VALID_ID, body.sessionId)
      end
    end)
  end)

  describe("a new session", function()
    local function assert_new_session(s, old_id)
      local c = client({ storage = s })
      local before = helpers.now_ms()
      local id = c:get_session_id()
      local after = helpers.now_ms()
      assert.matches(helpers.SESSION_ID, id)
      if old_id then assert.are_not.equal(old_id, id) end

      local rec, raw = read_record(s)
      assert.matches('^{"id":"SESSION%-[%x%-]+%-%d+","expires":%d+}$', raw)
      assert.are.equal(id, rec.id)
      assert_expires(rec.expires, before, after, DEFAULT_TIMEOUT_MS)
      assert.are.equal(id, c:get_session_id())
    end

    it("starts when there is no record", function()
      assert_new_session(helpers.recording_storage())
    end)

    it("starts when the record has expired", function()
      local s = helpers.recording_storage({
        dn_session_id = record({ id = VALID_ID, expires = helpers.now_ms() - 1000 }),
      })
      assert_new_session(s, VALID_ID)
    end)

    local now = helpers.now_ms() + 600000
    local corrupt = {
      { "not JSON", "SESSION-b0b13d41" },
      { "a JSON array", '["' .. VALID_ID .. '",' .. now .. "]" },
      { "a JSON string", '"' .. VALID_ID .. '"' },
      { "truncated JSON", '{"id":"' .. VALID_ID .. '","expires":' },
      { "no id", '{"expires":' .. now .. "}" },
      { "an id of the wrong shape", '{"id":"SESSION-nope","expires":' .. now .. "}" },
      { "a user id as the id", '{"id":"0bc41c04-4eed-4aae-a318-4f9ab9b6f338-1759904642100","expires":' .. now .. "}" },
      { "an id with CR/LF", '{"id":"' .. VALID_ID .. '\\r\\n","expires":' .. now .. "}" },
      { "a number as the id", '{"id":42,"expires":' .. now .. "}" },
      { "expires as a string", '{"id":"' .. VALID_ID .. '","expires":"' .. now .. '"}' },
      { "expires null", '{"id":"' .. VALID_ID .. '","expires":null}' },
      { "no expires", '{"id":"' .. VALID_ID .. '"}' },
      { "over 16 KB", '{"id":"' .. VALID_ID .. '","expires":' .. now .. ',"pad":"'
        .. string.rep("x", 17000) .. '"}' },
    }
    for _, case in ipairs(corrupt) do
      it("starts when the record is " .. case[1] .. ", and rewrites it valid", function()
        assert_new_session(helpers.recording_storage({ dn_session_id = case[2] }), VALID_ID)
      end)
    end
  end)

  describe("session_timeout", function()
    it("ends a session after that much idle time, not while it is used #timing", function()
      -- 0.4 s, longer on a slow run, so that a use never comes late by accident.
      local timeout = helpers.within(0.4)
      local c = client({ session_timeout = timeout })
      local first = c:get_session_id()
      -- Used every quarter of the timeout for 1.5 timeouts: never idle that long.
      for i = 1, 6 do
        helpers.sleep(timeout / 4)
        if i % 2 == 0 then
          assert.are.equal(first, c:get_session_id())
        else
          assert.is_true(c:emit("page_view", { n = i }))
        end
      end
      assert.is_true(c:flush(5))
      for _, body in ipairs(helpers.request_bodies(collector)) do
        assert.are.equal(first, body.sessionId)
      end

      helpers.sleep(timeout + 0.1)
      local second = c:get_session_id()
      assert.matches(helpers.SESSION_ID, second)
      assert.are_not.equal(first, second)
    end)
  end)

  describe("sessionStartPage", function()
    it("is null before any event with a url", function()
      local s = helpers.recording_storage()
      local body = emit_and_read(client({ storage = s }), "app_open")
      assert.are.equal(cjson.null, body.sessionStartPage)
      assert.is_nil(read_record(s).startPage)
    end)

    it("is the url of the first event of the session, remembered in the record", function()
      local s = helpers.recording_storage()
      local c = client({ storage = s })

      local body = emit_and_read(c, "page_view", { url = "/landing" })
      assert.are.equal("/landing", body.sessionStartPage)
      local rec, raw = read_record(s)
      assert.are.equal("/landing", rec.startPage)
      assert.are.equal(body.sessionId, rec.id)
      assert.truthy(raw:find('"startPage":"/landing"', 1, true))

      body = emit_and_read(c, "page_view", { url = "/products/shoes" })
      assert.are.equal("/landing", body.sessionStartPage)
      body = emit_and_read(c, "add_to_cart", { sku = "shoe-42" })
      assert.are.equal("/landing", body.sessionStartPage)
      assert.are.equal("/landing", read_record(s).startPage)
    end)

    it("is the first url even when earlier events of the session had none", function()
      local s = helpers.recording_storage()
      local c = client({ storage = s })
      assert.are.equal(cjson.null, emit_and_read(c, "app_open").sessionStartPage)
      assert.are.equal("/first", emit_and_read(c, "page_view", { url = "/first" }).sessionStartPage)
      assert.are.equal("/first", emit_and_read(c, "page_view", { url = "/second" }).sessionStartPage)
    end)

    it("starts over with the first url of a new session", function()
      local s = helpers.recording_storage()
      local c = client({ storage = s })
      local first = emit_and_read(c, "page_view", { url = "/landing" })

      -- The session expires, as if the visitor had been away.
      local rec = read_record(s)
      rec.expires = helpers.now_ms() - 1
      s.data.dn_session_id = cjson.encode(rec)

      local body = emit_and_read(c, "page_view", { url = "/comeback" })
      assert.are_not.equal(first.sessionId, body.sessionId)
      assert.are.equal("/comeback", body.sessionStartPage)
      assert.are.equal("/comeback", read_record(s).startPage)
      assert.are.equal("/comeback", emit_and_read(c, "page_view", { url = "/x" }).sessionStartPage)
    end)

    it("is overridden on the wire by fields.sessionStartPage", function()
      local s = helpers.recording_storage()
      local c = client({ storage = s })
      emit_and_read(c, "page_view", { url = "/landing" })
      local body = emit_and_read(c, "page_view", { url = "/y" }, { sessionStartPage = "/from-server" })
      assert.are.equal("/from-server", body.sessionStartPage)
      body = emit_and_read(c, "page_view", { url = "/z" }, { sessionStartPage = cjson.null })
      assert.are.equal(cjson.null, body.sessionStartPage)
      assert.are.equal("/landing", emit_and_read(c, "page_view", { url = "/w" }).sessionStartPage)
    end)

    it("is taken from the next event for a browser record that has none", function()
      local s = helpers.recording_storage({
        dn_session_id = record({ id = VALID_ID, expires = helpers.now_ms() + 600000 }),
      })
      local c = client({ storage = s })
      local body = emit_and_read(c, "page_view", { url = "/checkout" })
      assert.are.equal(VALID_ID, body.sessionId)
      assert.are.equal("/checkout", body.sessionStartPage)
      local rec = read_record(s)
      assert.are.equal(VALID_ID, rec.id)
      assert.are.equal("/checkout", rec.startPage)
    end)

    it("keeps the session when the record's startPage is not a string", function()
      local s = helpers.recording_storage({
        dn_session_id = '{"id":"' .. VALID_ID .. '","expires":' .. (helpers.now_ms() + 600000)
          .. ',"startPage":42}',
      })
      local body = emit_and_read(client({ storage = s }), "page_view", { url = "/again" })
      assert.are.equal(VALID_ID, body.sessionId)
      assert.are.equal("/again", body.sessionStartPage)
    end)

    it("longer than 4096 bytes is sent but not remembered", function()
      local s = helpers.recording_storage()
      local c = client({ storage = s })
      local long = "/" .. string.rep("p", 5000)
      local body = emit_and_read(c, "page_view", { url = long })
      assert.is_string(body.sessionStartPage, "sessionStartPage of the event is not the long url")
      assert.is_true(body.sessionStartPage == long, "sessionStartPage differs from the url")
      local rec, raw = read_record(s)
      assert.are.equal(body.sessionId, rec.id)
      assert.is_nil(rec.startPage)
      assert.is_true(#raw < 4096)
    end)

    it("of exactly 4096 bytes is remembered", function()
      local s = helpers.recording_storage()
      local c = client({ storage = s })
      local page = "/" .. string.rep("q", 4095)
      assert.are.equal(page, emit_and_read(c, "page_view", { url = page }).sessionStartPage)
      assert.are.equal(page, read_record(s).startPage)
    end)
  end)
end)
