-- Bad input: hostile values given to emit, identify, get_user_id, get_session_id,
-- configure/new, and hostile values a storage hands back. One row each, with the exact
-- answer: a refusal (nil, "CODE: reason", nothing queued), a delivery (and what the
-- collector got, byte for byte where it matters), an error raised (configuration and
-- argument mistakes only), or the ids answered and written back.
local helpers = require("spec.helpers")
local cjson = require("cjson")

local dn = helpers.dn()

local unpack = table.unpack or unpack
local MB = 1024 * 1024
local VALID_USER_ID = "0bc41c04-4eed-4aae-a318-4f9ab9b6f338-1759904642100"
local VALID_SESSION_ID = "SESSION-b0b13d41-7651-4ec3-87e2-77a6dc0aa60e-1770181330638"
local TIMEOUT_MS = 1800 * 1000

local function pack(...)
  return { n = select("#", ...), ... }
end

local function nested(depth)
  local root = {}
  local t = root
  for _ = 2, depth do
    t.child = {}
    t = t.child
  end
  return root
end

local function session_record(expires, extra)
  return '{"id":"' .. VALID_SESSION_ID .. '","expires":' .. expires .. (extra or "") .. "}"
end

-- Calls ------------------------------------------------------------------------

-- env.client:emit(...) with exactly these arguments (trailing nils included).
local function emit(...)
  local args = pack(...)
  return function(env) return env.client:emit(unpack(args, 1, args.n)) end
end

local function configure(opts)
  return function() return dn.new(opts) end
end

-- Answers ----------------------------------------------------------------------

-- nil, "<CODE>: <reason>" with fragment in the reason; nothing queued or sent.
local function refused(code, fragment)
  return { kind = "refused", code = code, fragment = fragment }
end

-- true; then the event reaches the collector, which accepts it; check(raw body,
-- decoded body, request record, env) looks at what arrived.
local function delivered(check)
  return { kind = "delivered", check = check }
end

-- Raises exactly `message` (a string), or a message matching `pattern`.
local function raises(message)
  return { kind = "raises", message = message }
end

local function raises_matching(pattern)
  return { kind = "raises", pattern = pattern }
end

-- Returns normally; check(results, env) judges the values.
local function answers(check)
  return { kind = "answers", check = check }
end

-- Checks -----------------------------------------------------------------------

local function raw_contains(fragment)
  return function(raw)
    assert.truthy(raw:find(fragment, 1, true), "the body does not contain " .. fragment .. ": " .. raw)
  end
end

local function metadata_is(expected)
  return function(_, body) assert.same(expected, body.metadata) end
end

-- A stored user id that is replaced: a new id answered and written back.
local function user_id_replaced(results, env)
  assert.equals(1, results.n)
  local id = results[1]
  assert.matches(helpers.USER_ID, id)
  assert.equals(id, env.storage.data.dn_user_id)
  assert.equals(id, env.client:get_user_id())
end

local function read_record(env)
  return cjson.decode(env.storage.data.dn_session_id)
end

local function assert_fresh_expires(record, env)
  assert(record.expires >= env.t0_ms + TIMEOUT_MS and record.expires <= helpers.now_ms() + TIMEOUT_MS,
    "expires " .. tostring(record.expires) .. " is not now + session_timeout")
end

-- A stored session record that starts a new session, rewritten valid.
local function session_replaced(results, env)
  assert.equals(1, results.n)
  local id = results[1]
  assert.matches(helpers.SESSION_ID, id)
  assert.are_not.equal(VALID_SESSION_ID, id)
  local record = read_record(env)
  assert.equals(id, record.id)
  assert_fresh_expires(record, env)
  assert.matches('^{"id":"SESSION%-[%x%-]+%-%d+","expires":%d+}$', env.storage.data.dn_session_id)
end

-- A stored session record that is alive: kept, expires moved to now + timeout.
local function session_kept(results, env)
  assert.same({ n = 1, VALID_SESSION_ID }, results)
  local record = read_record(env)
  assert.equals(VALID_SESSION_ID, record.id)
  assert_fresh_expires(record, env)
end

local function storage_error(fragment)
  return function(_, body, _, env)
    assert.matches(helpers.USER_ID, body.userId)
    assert.matches(helpers.SESSION_ID, body.sessionId)
    assert.equals(1, #env.errors)
    assert.equals("STORAGE_ERROR", env.errors[1].code)
    assert.truthy(env.errors[1].message:find(fragment, 1, true), env.errors[1].message)
  end
end

-- Rows -------------------------------------------------------------------------

local cycle = {}
cycle.self = cycle

local hostile_index = setmetatable({}, { __index = function() error("__index ran") end })
local evil_url = setmetatable({ shown = "yes" }, { __index = function() return "/evil" end })
local hostile_pairs = setmetatable({ a = 1 }, { __pairs = function() error("__pairs ran") end })

-- name, call, expected answer, and for storage rows what the storage holds.
local rows = {
  -- emit: the event name
  { "emit: an event name of 1 MB", emit(string.rep("e", MB)),
    refused("EVENT_TOO_LARGE", "exceeds max_body (65536 bytes)") },
  { "emit: an event name with a NUL byte", emit("a\0b"),
    delivered(function(raw, body)
      raw_contains('"event":"a\\u0000b"')(raw)
      assert.equals("a\0b", body.event)
    end) },
  { "emit: an event name of invalid UTF-8 (passed through as bytes)", emit("ev\255\254"),
    delivered(function(raw) raw_contains('"event":"ev\255\254"')(raw) end) },
  { "emit: an empty event name", emit(""), refused("INVALID_EVENT", "non-empty string") },
  { "emit: a number as the event", emit(42), refused("INVALID_EVENT", "non-empty string") },

  -- emit: metadata
  { "emit: metadata holding 1 MB", emit("page_view", { blob = string.rep("x", MB) }),
    refused("EVENT_TOO_LARGE", "exceeds max_body (65536 bytes)") },
  { "emit: metadata holding 60 000 bytes (under max_body)",
    emit("page_view", { blob = string.rep("x", 60000) }),
    delivered(metadata_is({ blob = string.rep("x", 60000) })) },
  { "emit: metadata keys and values of invalid UTF-8",
    emit("page_view", { ["k\255"] = "\195\40" }),
    delivered(function(raw) raw_contains('"k\255":"\195\40"')(raw) end) },
  { "emit: a metadata key with a NUL byte", emit("page_view", { ["k\0"] = "v" }),
    delivered(raw_contains('"k\\u0000":"v"')) },
  { "emit: metadata 31 levels deep (32 with the body)", emit("page_view", nested(31)),
    delivered(function(_, body) assert.is_table(body.metadata.child) end) },
  { "emit: metadata 32 levels deep", emit("page_view", nested(32)),
    refused("INVALID_METADATA", "metadata.child.child.child") },
  { "emit: metadata 40 levels deep", emit("page_view", nested(40)),
    refused("INVALID_METADATA", ": nested deeper than 31 levels") },
  { "emit: metadata with a cycle", emit("page_view", cycle),
    refused("INVALID_METADATA", "(or a table that contains itself)") },
  { "emit: NaN in metadata", emit("page_view", { x = 0 / 0 }),
    refused("INVALID_METADATA", "metadata.x: cannot encode NaN or infinity") },
  { "emit: -math.huge in metadata", emit("page_view", { x = -math.huge }),
    refused("INVALID_METADATA", "metadata.x: cannot encode NaN or infinity") },
  { "emit: a sparse array as metadata", emit("page_view", { [1] = 1, [100] = 2 }),
    refused("INVALID_METADATA", "not a list") },
  { "emit: a sparse array inside metadata", emit("page_view", { a = { [1] = 1, [100] = 2 } }),
    delivered(metadata_is({ a = { ["1"] = 1, ["100"] = 2 } })) },
  { "emit: a boolean key", emit("page_view", { [true] = 1 }),
    refused("INVALID_METADATA", "metadata[boolean key]: a key must be a string or a number") },
  { "emit: a table key beside a string key", emit("page_view", { a = 1, [{}] = 1 }),
    refused("INVALID_METADATA", "metadata[table key]: a key must be a string or a number") },
  { "emit: a fractional number key", emit("page_view", { [1.5] = 1 }),
    refused("INVALID_METADATA", "string keys") },
  { "emit: a function value", emit("page_view", { f = print }),
    refused("INVALID_METADATA", "metadata.f: cannot encode a function") },
  { "emit: a coroutine value", emit("page_view", { co = coroutine.create(function() end) }),
    refused("INVALID_METADATA", "metadata.co: cannot encode a coroutine") },
  { "emit: a userdata value", emit("page_view", { out = io.stdout }),
    refused("INVALID_METADATA", "metadata.out: cannot encode a userdata") },
  { "emit: cjson.null as a value", emit("page_view", { gone = cjson.null }),
    delivered(raw_contains('"metadata":{"gone":null}')) },
  { "emit: metadata whose __index raises (read raw)", emit("page_view", hostile_index),
    delivered(function(_, body)
      assert.same({}, body.metadata)
      assert.equals(cjson.null, body.sessionStartPage)
    end) },
  { "emit: metadata whose __index makes up a url (read raw)", emit("page_view", evil_url),
    delivered(function(_, body)
      assert.same({ shown = "yes" }, body.metadata)
      assert.equals(cjson.null, body.sessionStartPage)
    end) },
  { "emit: metadata whose __pairs raises (read raw)", emit("page_view", hostile_pairs),
    delivered(metadata_is({ a = 1 })) },

  -- emit: fields
  { "emit: a userAgent with CR/LF (header injection)", emit("page_view", nil, { userAgent = "x\r\nX-Evil: 1" }),
    refused("INVALID_FIELD", "field 'userAgent'") },
  { "emit: a userAgent with a NUL byte", emit("page_view", nil, { userAgent = "x\0y" }),
    refused("INVALID_FIELD", "field 'userAgent'") },
  { "emit: a clientIp with CR/LF", emit("page_view", nil, { clientIp = "1.2.3.4\r\n" }),
    refused("INVALID_FIELD", "field 'clientIp'") },
  { "emit: a referrerUrl with CR/LF (stays inside the JSON)",
    emit("page_view", nil, { referrerUrl = "https://r.example/\r\nSet-Cookie: a=1" }),
    delivered(function(raw, body, rec)
      raw_contains('"referrerUrl":"https://r.example/\\r\\nSet-Cookie: a=1"')(raw)
      assert.equals("https://r.example/\r\nSet-Cookie: a=1", body.referrerUrl)
      assert.is_nil(rec.all_headers["set-cookie"])
    end) },
  { "emit: a customersId of 1 MB", emit("page_view", nil, { customersId = string.rep("c", MB) }),
    refused("EVENT_TOO_LARGE", "exceeds max_body") },
  { "identify: an id with CR/LF (stays inside the JSON)",
    function(env)
      env.client:identify("cust\r\nX-Evil: 1")
      return env.client:emit("page_view")
    end,
    delivered(function(raw, body)
      raw_contains('"customersId":"cust\\r\\nX-Evil: 1"')(raw)
      assert.is_true(body.hasCustomerAccount)
    end) },
  { "identify: an id with a NUL byte", function(env) env.client:identify("a\0b") end,
    raises_matching("^bad argument #1 to '[%w_.]*identify' %(customers id must be a non%-empty string without NUL%)$") },

  -- get_user_id / get_session_id arguments
  -- (Not tail calls: the message then names the function.)
  { "dn.get_user_id(42)", function() local id = dn.get_user_id(42); return id end,
    raises_matching("^bad argument #1 to '[%w_.]*get_user_id' %(storage must be a table with get and set%)$") },
  { "dn.get_session_id(\"x\")", function() local id = dn.get_session_id("x"); return id end,
    raises_matching("^bad argument #1 to '[%w_.]*get_session_id' %(storage must be a table with get and set%)$") },
  { "c:get_user_id(42)", function(env) local id = env.client:get_user_id(42); return id end,
    raises_matching("^bad argument #1 to '[%w_.]*get_user_id' %(storage must be a table with get and set%)$") },

  -- what a storage hands back
  { "storage: a dn_user_id of 1 MB", function(env) return env.client:get_user_id() end,
    answers(user_id_replaced), stored = { dn_user_id = VALID_USER_ID .. string.rep("1", MB) } },
  { "storage: a dn_user_id with a NUL byte", function(env) return env.client:get_user_id() end,
    answers(user_id_replaced),
    stored = { dn_user_id = VALID_USER_ID:sub(1, 20) .. "\0" .. VALID_USER_ID:sub(21) } },
  { "storage: a dn_user_id of invalid UTF-8", function(env) return env.client:get_user_id() end,
    answers(user_id_replaced), stored = { dn_user_id = VALID_USER_ID .. "\255" } },
  { "storage: a session whose expires is 9e15 (far future, exact in a double)",
    function(env) return env.client:get_session_id() end,
    answers(session_kept), stored = { dn_session_id = session_record("9e15") } },
  -- Beyond 2^53 ms no clock can be: taken as unparsable, not as alive for ever.
  { "storage: a session whose expires is 1e300", function(env) return env.client:get_session_id() end,
    answers(session_replaced), stored = { dn_session_id = session_record("1e300") } },
  { "storage: a session whose expires is the string \"123\"", function(env) return env.client:get_session_id() end,
    answers(session_replaced), stored = { dn_session_id = session_record('"123"') } },
  { "storage: a session whose expires is true", function(env) return env.client:get_session_id() end,
    answers(session_replaced), stored = { dn_session_id = session_record("true") } },
  { "storage: a session whose expires is negative", function(env) return env.client:get_session_id() end,
    answers(session_replaced), stored = { dn_session_id = session_record("-5") } },
  { "storage: a session record \"null\"", function(env) return env.client:get_session_id() end,
    answers(session_replaced), stored = { dn_session_id = "null" } },
  { "storage: a session record of 1 MB", function(env) return env.client:get_session_id() end,
    answers(session_replaced),
    stored = { dn_session_id = session_record("9e15", ',"pad":"' .. string.rep("x", MB) .. '"') } },
  { "storage: get answering 1 MB of junk for dn_session_id, inside emit",
    emit("page_view", { url = "/after-junk" }),
    delivered(function(_, body, _, env)
      assert.matches(helpers.SESSION_ID, body.sessionId)
      local record = read_record(env)
      assert.equals(body.sessionId, record.id)
      assert.equals("/after-junk", record.startPage)
      assert.same({}, env.errors)
    end),
    stored = { dn_session_id = string.rep("z", MB) } },
  { "storage: get answering a number for dn_user_id", emit("page_view"),
    delivered(storage_error('storage.get("dn_user_id") returned a number')),
    stored = { dn_user_id = 42 } },
  { "storage: get answering a table for dn_session_id", emit("page_view"),
    delivered(storage_error('storage.get("dn_session_id") returned a table')),
    stored = { dn_session_id = {} } },

  -- configure / new
  { "configure: endpoint file:///etc/passwd", configure({ endpoint = "file:///etc/passwd" }),
    raises("dukanext: option 'endpoint' must be an http:// or https:// URL: file:///etc/passwd") },
  { "configure: endpoint gopher://x/", configure({ endpoint = "gopher://x/" }),
    raises("dukanext: option 'endpoint' must be an http:// or https:// URL: gopher://x/") },
  { "configure: endpoint http:// (no host)", configure({ endpoint = "http://" }),
    raises("dukanext: option 'endpoint' is not a valid URL: http://") },
  { "configure: endpoint http://a b", configure({ endpoint = "http://a b" }),
    raises("dukanext: option 'endpoint' is not a valid URL: http://a b") },
  { "configure: endpoint with CR/LF", configure({ endpoint = "http://x/\r\nHost: y" }),
    raises_matching("^dukanext: option 'endpoint' must not contain NUL, CR or LF") },
  { "configure: endpoint with a NUL byte", configure({ endpoint = "http://x/\0" }),
    raises_matching("^dukanext: option 'endpoint' must not contain NUL, CR or LF") },
  -- curl cannot send a request line that long; nginx refuses over 8 KiB anyway.
  { "configure: endpoint of 1 MB", configure({ endpoint = "http://127.0.0.1/?q=" .. string.rep("a", MB) }),
    raises_matching("^dukanext: option 'endpoint' ") },
  { "configure: a header value with LF", configure({ headers = { ["X-A"] = "a\nb" } }),
    raises("dukanext: option 'headers': the value of 'X-A' contains NUL, CR or LF") },
  { "configure: a header name with CR/LF", configure({ headers = { ["X-A\r\nX-B"] = "1" } }),
    raises_matching("^dukanext: option 'headers': 'X%-A.*' is not a valid header name$") },
  { "configure: user_agent with CR/LF", configure({ user_agent = "ua\r\nX-Evil: 1" }),
    raises("dukanext: option 'user_agent' must not contain NUL, CR or LF") },
  { "configure: proxy with CR/LF", configure({ proxy = "http://p\r\n" }),
    raises("dukanext: option 'proxy' must not contain NUL, CR or LF") },
  { "configure: max_queue NaN", configure({ max_queue = 0 / 0 }),
    raises("dukanext: option 'max_queue' must be an integer from 1 to 1e+09") },
  { "configure: timeout math.huge", configure({ timeout = math.huge }),
    raises("dukanext: option 'timeout' must be a number of seconds from 0.001 to 1e+06") },
  { "configure: an option name that is not a string", configure({ [1] = "x" }),
    raises("dukanext: option names must be strings") },
  { "configure: a storage whose __index raises",
    configure({ storage = setmetatable({}, { __index = function() error("boom") end }) }),
    raises("dukanext: option 'storage' must be a table with get and set functions") },
}

describe("bad input", function()
  local c

  lazy_setup(function()
    c = helpers.start_collector()
  end)

  lazy_teardown(function()
    if c then c:stop() end
  end)

  -- README's Reliability table gives this count: a row added or lost shows here.
  it("has the 65 rows README counts", function()
    assert.equals(65, #rows)
  end)

  for _, row in ipairs(rows) do
    local name, call, expected = row[1], row[2], row[3]
    it(name, function()
      c:reset()
      local env = { errors = {}, t0_ms = helpers.now_ms() }
      env.storage = helpers.recording_storage(row.stored)
      env.client = dn.new(helpers.fast({
        endpoint = c.url, storage = env.storage,
        on_error = function(err) env.errors[#env.errors + 1] = err end,
      }))
      finally(function() env.client:close() end)

      local results = pack(pcall(call, env))
      if expected.kind == "raises" then
        assert.is_false(results[1], "did not raise")
        -- Without the position luaL_error puts in front (the caller's file and line).
        local message = tostring(results[2]):gsub("^[^\n:]*%.lua:%d+: ", "", 1)
        if expected.message then
          assert.equals(expected.message, message)
        else
          assert.matches(expected.pattern, message)
        end
        return
      end
      assert.is_true(results[1], "raised: " .. tostring(results[2]))
      local answer = pack(select(2, unpack(results, 1, results.n)))

      if expected.kind == "refused" then
        assert.equals(2, answer.n)
        assert.is_nil(answer[1])
        assert.is_string(answer[2])
        assert.matches("^" .. expected.code .. ": .", answer[2])
        assert.truthy(answer[2]:find(expected.fragment, 1, true), answer[2])
        assert.is_true(env.client:flush(2))
        local s = env.client:stats()
        assert.equals(0, s.queued + s.in_flight + s.sent + s.failed + s.dropped)
        assert.same({}, c:requests())
      elseif expected.kind == "delivered" then
        assert.same({ n = 1, true }, answer)
        assert.is_true(env.client:flush(5))
        local records = c:requests()
        assert.equals(1, #records)
        local rec = records[1]
        assert.equals(200, rec.status)
        assert.equals("accepted", rec.action)
        assert.same({ rec.body }, c:event_lines())
        expected.check(rec.body, cjson.decode(rec.body), rec, env)
        assert.equals(1, env.client:stats().sent)
      else
        expected.check(answer, env)
      end
    end)
  end
end)
