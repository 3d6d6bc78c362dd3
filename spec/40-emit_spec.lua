-- emit: the body on the wire, identity, headers, refusals; configure/new errors.
local helpers = require("spec.helpers")
local cjson = require("cjson")

local BODY_KEYS = {
  "customersId", "event", "hasCustomerAccount", "metadata",
  "referrerUrl", "sessionId", "sessionStartPage", "userId",
}

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  return keys
end

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

describe("emit", function()
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

  -- Emits and delivers one event; answers its request record and decoded body.
  local function send(c, event, metadata, fields)
    local before = #collector:requests()
    assert.are.equal(true, c:emit(event, metadata, fields))
    assert.is_true(c:flush(5))
    local requests = collector:requests()
    assert.are.equal(before + 1, #requests)
    local rec = requests[#requests]
    return rec, cjson.decode(rec.body)
  end

  -- Before anything in this file configures the module-level client.
  it("answers NO_ENDPOINT from the module's default client before configure", function()
    local ok, err = dn.emit("page_view", { url = "/" })
    assert.is_nil(ok)
    assert.matches("^NO_ENDPOINT: .+", err)
  end)

  describe("the request", function()
    it("is a PUT of JSON to /access/api/v1/analytics", function()
      local rec = send(client(), "page_view", { url = "/" })
      assert.are.equal("PUT", rec.method)
      assert.are.equal("/access/api/v1/analytics", rec.uri)
      assert.are.equal("application/json", rec.headers.content_type)
      assert.are.equal(200, rec.status)
    end)

    it("has exactly the eight keys, null where unknown", function()
      local c = client()
      local rec, body = send(c, "page_view")
      assert.same(BODY_KEYS, sorted_keys(body))
      assert.matches(helpers.USER_ID, body.userId)
      assert.matches(helpers.SESSION_ID, body.sessionId)
      assert.are.equal(c:get_user_id(), body.userId)
      assert.are.equal(c:get_session_id(), body.sessionId)
      assert.are.equal("page_view", body.event)
      assert.are.equal(cjson.null, body.sessionStartPage)
      assert.are.equal(cjson.null, body.referrerUrl)
      assert.are.equal(cjson.null, body.customersId)
      assert.are.equal(false, body.hasCustomerAccount)
      assert.same({}, body.metadata)

      for _, raw in ipairs({ '"metadata":{}', '"referrerUrl":null', '"customersId":null',
        '"sessionStartPage":null', '"hasCustomerAccount":false' }) do
        assert.truthy(rec.body:find(raw, 1, true), raw .. " not in " .. rec.body)
      end
    end)

    it("carries the metadata as an object", function()
      local metadata = { url = "/p/1", productId = "sku-9", price = 12.5, tags = { "a", "b" },
        nested = { deep = { yes = true } } }
      local _, body = send(client(), "add_to_cart", metadata)
      assert.same(metadata, body.metadata)
      assert.are.equal("add_to_cart", body.event)
    end)

    it("sends an empty metadata table as {}", function()
      local rec = send(client(), "page_view", {})
      assert.truthy(rec.body:find('"metadata":{}', 1, true), rec.body)
    end)

    it("encodes a very sparse array inside metadata as an object", function()
      local rec, body = send(client(), "page_view", { items = { [1] = "a", [1000] = "z" } })
      assert.truthy(rec.body:find('"items":{', 1, true), rec.body)
      assert.same({ ["1"] = "a", ["1000"] = "z" }, body.metadata.items)
    end)

    it("encodes a short array with holes inside metadata as an object", function()
      local rec, body = send(client(), "page_view", { items = { [1] = "a", [5] = "e" } })
      assert.truthy(rec.body:find('"items":{', 1, true), rec.body)
      assert.same({ ["1"] = "a", ["5"] = "e" }, body.metadata.items)
    end)

    it("encodes a list without holes inside metadata as an array", function()
      local rec, body = send(client(), "page_view", { items = { "a", "b" } })
      assert.truthy(rec.body:find('"items":["a","b"]', 1, true), rec.body)
      assert.same({ "a", "b" }, body.metadata.items)
    end)

    it("accepts metadata with both string and number keys", function()
      local _, body = send(client(), "page_view", { url = "/m", [1] = "one", [2] = "two" })
      assert.are.equal("/m", body.metadata.url)
      assert.are.equal("one", body.metadata["1"])
      assert.are.equal("two", body.metadata["2"])
    end)

    it("passes referrerUrl through", function()
      local _, body = send(client(), "page_view", { url = "/" }, { referrerUrl = "https://google.com/?q=shoes" })
      assert.are.equal("https://google.com/?q=shoes", body.referrerUrl)
    end)

    it("returns exactly true for a valid event", function()
      local c = client()
      assert.are.equal(1, select("#", c:emit("page_view", { url = "/one" })))
      local ok = c:emit("page_view", { url = "/two" })
      assert.are.equal(true, ok)
      assert.is_true(c:flush(5))
    end)
  end)

  describe("identity", function()
    it("identify(id) marks following events, reset() makes them anonymous again", function()
      local c = client()
      local _, body = send(c, "page_view", { n = 1 })
      assert.are.equal(false, body.hasCustomerAccount)
      assert.are.equal(cjson.null, body.customersId)

      c:identify("cust-42")
      _, body = send(c, "page_view", { n = 2 })
      assert.are.equal(true, body.hasCustomerAccount)
      assert.are.equal("cust-42", body.customersId)
      _, body = send(c, "add_to_cart", { n = 3 })
      assert.are.equal("cust-42", body.customersId)

      c:reset()
      _, body = send(c, "page_view", { n = 4 })
      assert.are.equal(false, body.hasCustomerAccount)
      assert.are.equal(cjson.null, body.customersId)
    end)

    it("keeps the visitor's ids across identify and reset", function()
      local c = client()
      local user_id, session_id = c:get_user_id(), c:get_session_id()
      c:identify("cust-42")
      c:reset()
      local _, body = send(c, "page_view", { n = 5 })
      assert.are.equal(user_id, body.userId)
      assert.are.equal(session_id, body.sessionId)
    end)

    it("is overridden by the fields for one event", function()
      local c = client()
      c:identify("cust-42")
      local _, body = send(c, "page_view", { n = 1 }, { hasCustomerAccount = false, customersId = cjson.null })
      assert.are.equal(false, body.hasCustomerAccount)
      assert.are.equal(cjson.null, body.customersId)

      _, body = send(c, "page_view", { n = 2 }, { customersId = "cust-7" })
      assert.are.equal(true, body.hasCustomerAccount)
      assert.are.equal("cust-7", body.customersId)

      _, body = send(c, "page_view", { n = 3 })
      assert.are.equal("cust-42", body.customersId)

      c:reset()
      _, body = send(c, "page_view", { n = 4 }, { customersId = "cust-9" })
      assert.are.equal(true, body.hasCustomerAccount)
      assert.are.equal("cust-9", body.customersId)
      _, body = send(c, "page_view", { n = 5 }, { hasCustomerAccount = true })
      assert.are.equal(true, body.hasCustomerAccount)
      assert.are.equal(cjson.null, body.customersId)
    end)
  end)

  describe("headers", function()
    it("sends User-Agent dukanext-lua/<version> by default", function()
      local rec = send(client(), "page_view")
      assert.are.equal("dukanext-lua/" .. dn._VERSION, rec.headers.user_agent)
      assert.is_nil(rec.headers.x_forwarded_for)
    end)

    it("sends the user_agent option", function()
      local rec = send(client({ user_agent = "shop-backend/2.1" }), "page_view")
      assert.are.equal("shop-backend/2.1", rec.headers.user_agent)
    end)

    it("sends the headers option", function()
      local rec = send(client({ headers = { ["X-Shop"] = "eu-1", ["X-Trace"] = "t-9" } }), "page_view")
      assert.are.equal("eu-1", rec.all_headers["x-shop"])
      assert.are.equal("t-9", rec.all_headers["x-trace"])
    end)

    it("sends fields.userAgent as the User-Agent of that event only, never in the body", function()
      local ua = "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0"
      local c = client()
      local rec, body = send(c, "page_view", { url = "/v" }, { userAgent = ua })
      assert.are.equal(ua, rec.headers.user_agent)
      assert.same(BODY_KEYS, sorted_keys(body))
      assert.is_nil(rec.body:find("Firefox", 1, true))

      rec = send(c, "page_view", { url = "/w" })
      assert.are.equal("dukanext-lua/" .. dn._VERSION, rec.headers.user_agent)
    end)

    it("sends fields.clientIp as the X-Forwarded-For of that event only, never in the body", function()
      local ip = "203.0.113.7, 10.0.0.1"
      local c = client()
      local rec, body = send(c, "page_view", { url = "/v" }, { clientIp = ip })
      assert.are.equal(ip, rec.headers.x_forwarded_for)
      assert.same(BODY_KEYS, sorted_keys(body))
      assert.is_nil(rec.body:find("203.0.113.7", 1, true))

      rec = send(c, "page_view", { url = "/w" })
      assert.is_nil(rec.headers.x_forwarded_for)
    end)

    it("sends fields.userAgent instead of the user_agent option", function()
      local c = client({ user_agent = "shop-backend/2.1" })
      local rec = send(c, "page_view", { url = "/u" }, { userAgent = "Mozilla/5.0 Safari/605" })
      assert.are.equal("Mozilla/5.0 Safari/605", rec.headers.user_agent)
    end)

    it("accepts an IPv6 clientIp", function()
      local rec = send(client(), "page_view", { url = "/6" }, { clientIp = "2001:db8::1" })
      assert.are.equal("2001:db8::1", rec.headers.x_forwarded_for)
    end)
  end)

  describe("refusals", function()
    -- Each refusal answers exactly nil, "<CODE>: <reason>", raises nothing and sends nothing.
    local function assert_refused(c, code, ...)
      local results = pack(pcall(c.emit, c, ...))
      assert.is_true(results[1], "emit raised: " .. tostring(results[2]))
      assert.are.equal(3, results.n)
      assert.is_nil(results[2])
      assert.is_string(results[3])
      assert.matches("^" .. code .. ": .+", results[3])
    end

    local function assert_nothing_sent(c, stats_before)
      assert.is_true(c:flush(2))
      assert.same(stats_before, c:stats())
      assert.are.equal(0, #collector:requests())
    end

    it("INVALID_EVENT for an event that is not a non-empty string", function()
      local c = client()
      local before = c:stats()
      assert_refused(c, "INVALID_EVENT")
      assert_refused(c, "INVALID_EVENT", nil)
      assert_refused(c, "INVALID_EVENT", "")
      assert_refused(c, "INVALID_EVENT", 42)
      assert_refused(c, "INVALID_EVENT", { "page_view" })
      assert_refused(c, "INVALID_EVENT", true)
      assert_nothing_sent(c, before)
    end)

    it("INVALID_METADATA for metadata that is not an encodable object", function()
      local c = client()
      local before = c:stats()
      local cycle = {}
      cycle.self = cycle
      local cases = {
        "a string", 42, true, { 1, 2 }, { "a", "b", "c" },
        { f = function() end },
        { out = io.stdout },
        { inner = { co = coroutine.create(function() end) } },
        cycle,
        { x = 0 / 0 },
        { x = math.huge },
        { x = -math.huge },
        nested(40),
      }
      for i, metadata in ipairs(cases) do
        local ok, err = c:emit("page_view", metadata)
        assert.is_nil(ok, "case " .. i .. " accepted")
        assert.matches("^INVALID_METADATA: .+", err)
      end
      assert_nothing_sent(c, before)
    end)

    it("accepts metadata nested 20 levels deep", function()
      local c = client()
      assert.are.equal(true, c:emit("page_view", nested(20)))
      assert.is_true(c:flush(5))
    end)

    it("INVALID_FIELD for fields of the wrong type, name or value", function()
      local c = client()
      local before = c:stats()
      local cases = {
        "not a table", 42, true,
        { unknown = "x" },
        { referrer = "https://x" },
        { [1] = "positional" },
        { referrerUrl = 42 },
        { referrerUrl = true },
        { sessionStartPage = 1 },
        { sessionStartPage = {} },
        { hasCustomerAccount = "yes" },
        { hasCustomerAccount = 1 },
        { customersId = 42 },
        { customersId = false },
        { storage = "file.json" },
        { storage = 42 },
        { userAgent = 42 },
        { userAgent = "Mozilla\r\nX-Injected: 1" },
        { userAgent = "Mozilla\nX" },
        { userAgent = string.rep("u", 2049) },
        { clientIp = 42 },
        { clientIp = "evil" },
        { clientIp = "1.2.3.4\r\nX-Injected: 1" },
        { clientIp = "" },
      }
      for i, fields in ipairs(cases) do
        local ok, err = c:emit("page_view", { n = i }, fields)
        assert.is_nil(ok, "case " .. i .. " accepted")
        assert.matches("^INVALID_FIELD: .+", err)
      end
      assert_nothing_sent(c, before)
    end)

    it("EVENT_TOO_LARGE for a body over max_body", function()
      local c = client({ max_body = 1024 })
      local before = c:stats()
      assert_refused(c, "EVENT_TOO_LARGE", "page_view", { blob = string.rep("x", 2000) })
      assert_refused(c, "EVENT_TOO_LARGE", string.rep("e", 2000))
      assert_nothing_sent(c, before)
      -- A small event still goes.
      send(c, "page_view", { blob = "small" })
    end)

    it("QUEUE_FULL once max_queue events wait, counted in dropped", function()
      local c = client({ max_queue = 3 })
      for i = 1, 3 do
        assert.are.equal(true, c:emit("page_view", { n = i }))
      end
      assert_refused(c, "QUEUE_FULL", "page_view", { n = 4 })
      local stats = c:stats()
      assert.are.equal(1, stats.dropped)
      assert.are.equal(3, stats.queued + stats.in_flight)
      assert.is_true(c:flush(5))
      assert.are.equal(3, #collector:requests())
      assert.are.equal(3, c:stats().sent)
      assert.are.equal(1, c:stats().dropped)
    end)

    it("NO_ENDPOINT for a client without an endpoint", function()
      local c = dn.new({})
      local before = c:stats()
      assert_refused(c, "NO_ENDPOINT", "page_view", { url = "/" })
      assert.is_true(c:flush(1))
      assert.same(before, c:stats())
    end)

    it("CLOSED after close()", function()
      local c = client()
      assert.are.equal(0, c:close())
      local before = c:stats()
      assert_refused(c, "CLOSED", "page_view", { url = "/" })
      assert.same(before, c:stats())
      assert.is_true(c:flush(2))
      assert.are.equal(0, #collector:requests())
    end)

    it("checks the event before the metadata, and the metadata before the fields", function()
      local c = client()
      local _, err = c:emit("", "bad metadata", "bad fields")
      assert.matches("^INVALID_EVENT: ", err)
      _, err = c:emit("page_view", "bad metadata", "bad fields")
      assert.matches("^INVALID_METADATA: ", err)
    end)

    it("does not touch the storage for an event refused by its arguments", function()
      local s = helpers.recording_storage()
      local c = client({ storage = s })
      assert.is_nil(c:emit(""))
      assert.is_nil(c:emit("page_view", "metadata"))
      assert.is_nil(c:emit("page_view", { 1, 2 }))
      assert.is_nil(c:emit("page_view", nil, { unknown = 1 }))
      assert.same({}, s.calls)
    end)
  end)

  describe("configure and new", function()
    local good_storage = { get = function() end, set = function() end }
    local bad_options = {
      { "unknown option", { endpont = "http://127.0.0.1/" }, "endpont" },
      { "endpoint not a string", { endpoint = 42 }, "endpoint" },
      { "endpoint ftp://", { endpoint = "ftp://x" }, "endpoint" },
      { "endpoint file://", { endpoint = "file:///etc/passwd" }, "endpoint" },
      { "endpoint not a url", { endpoint = "not a url" }, "endpoint" },
      { "endpoint with CR/LF", { endpoint = "http://x\r\n" }, "endpoint" },
      { "endpoint with LF inside", { endpoint = "http://x/\nHost: y" }, "endpoint" },
      { "storage not a table", { storage = "file.json" }, "storage" },
      { "storage without set", { storage = { get = function() end } }, "storage" },
      { "storage without get", { storage = { set = function() end } }, "storage" },
      { "storage with a non-function set", { storage = { get = function() end, set = "x" } }, "storage" },
      { "session_timeout a string", { session_timeout = "1800" }, "session_timeout" },
      { "session_timeout 0", { session_timeout = 0 }, "session_timeout" },
      { "timeout -1", { timeout = -1 }, "timeout" },
      { "timeout a string", { timeout = "10" }, "timeout" },
      { "timeout NaN", { timeout = 0 / 0 }, "timeout" },
      { "connect_timeout a boolean", { connect_timeout = true }, "connect_timeout" },
      { "max_queue 0", { max_queue = 0 }, "max_queue" },
      { "max_queue a string", { max_queue = "10" }, "max_queue" },
      { "max_in_flight 0", { max_in_flight = 0 }, "max_in_flight" },
      { "max_in_flight a fraction", { max_in_flight = 1.5 }, "max_in_flight" },
      { "max_retries -1", { max_retries = -1 }, "max_retries" },
      { "retry_base a string", { retry_base = "0.5" }, "retry_base" },
      { "retry_max a table", { retry_max = {} }, "retry_max" },
      { "max_body 10", { max_body = 10 }, "max_body" },
      { "headers a string", { headers = "X-Shop: eu" }, "headers" },
      { "header value with CR/LF", { headers = { ["X-Shop"] = "eu\r\nX-Evil: 1" } }, "headers" },
      { "header value with LF", { headers = { ["X-Shop"] = "eu\nX-Evil: 1" } }, "headers" },
      { "invalid header name", { headers = { ["X Shop"] = "eu" } }, "headers" },
      { "header name with a colon", { headers = { ["X-Shop:"] = "eu" } }, "headers" },
      { "header value not a string", { headers = { ["X-Shop"] = 1 } }, "headers" },
      { "reserved header Content-Type", { headers = { ["Content-Type"] = "text/plain" } }, "headers" },
      { "reserved header in lower case", { headers = { ["content-type"] = "text/plain" } }, "headers" },
      { "reserved header Idempotency-Key", { headers = { ["Idempotency-Key"] = "k" } }, "headers" },
      { "user_agent a number", { user_agent = 1 }, "user_agent" },
      { "user_agent with CR/LF", { user_agent = "ua\r\nX-Evil: 1" }, "user_agent" },
      { "ca_file a boolean", { ca_file = false }, "ca_file" },
      { "proxy a number", { proxy = 8080 }, "proxy" },
      { "insecure a string", { insecure = "yes" }, "insecure" },
      { "on_error not a function", { on_error = "print" }, "on_error" },
    }

    for _, case in ipairs(bad_options) do
      local name, opts, option = case[1], case[2], case[3]
      it("raise a clear error for " .. name, function()
        for _, fn in ipairs({ dn.new, dn.configure }) do
          local ok, err = pcall(fn, opts)
          assert.is_false(ok)
          assert.is_string(err)
          assert.truthy(err:find(option, 1, true), "error does not name '" .. option .. "': " .. err)
        end
      end)
    end

    it("raise for options that are not a table", function()
      assert.has_error(function() dn.new("http://127.0.0.1/") end)
      assert.has_error(function() dn.configure(42) end)
    end)

    it("accept every option with a good value", function()
      local c = dn.new({
        endpoint = collector.url, storage = good_storage, session_timeout = 60,
        timeout = 2, connect_timeout = 1, max_queue = 10, max_in_flight = 2, max_retries = 0,
        retry_base = 0.1, retry_max = 1, max_body = 4096, headers = { ["X-Shop"] = "eu-1" },
        insecure = false, on_error = function() end,
      })
      assert.are.equal(true, c:emit("page_view", { url = "/" }))
      assert.is_true(c:flush(5))
    end)

    it("accept the text options user_agent, ca_file, ca_path and proxy", function()
      local refused = {}
      for _, opts in ipairs({
        { user_agent = "ua/1" },
        { ca_file = "/etc/ssl/certs/ca-certificates.crt" },
        { ca_path = "/etc/ssl/certs" },
        { proxy = "http://127.0.0.1:3128" },
      }) do
        local ok, err = pcall(dn.new, opts)
        if not ok then refused[#refused + 1] = next(opts) .. ": " .. tostring(err) end
      end
      assert.same({}, refused)
    end)

    it("leave the default client unconfigured when they raise", function()
      local ok, err = dn.emit("page_view", { url = "/" })
      assert.is_nil(ok)
      assert.matches("^NO_ENDPOINT: ", err)
    end)
  end)
end)
