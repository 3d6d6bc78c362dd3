-- Proves the nginx test collector behaves like the real service and that its
-- misbehaviour plans work. Run from the repo root:
--   lua5.4 /usr/bin/busted spec/support/collector_selftest_spec.lua
package.path = "./?.lua;" .. package.path

local collector = require("spec.support.collector")
local cjson = require("cjson")
local socket = require("socket")

local function read_all(path)
  local f = io.open(path, "rb")
  local data = f and f:read("*a") or ""
  if f then f:close() end
  return data
end

local function write_all(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs curl; returns { exit, status, headers (lower-cased names), body }.
-- opts: method, body, headers (list of "Name: value"), args (extra CLI args).
local function curl(url, opts)
  opts = opts or {}
  local body_out, header_out = os.tmpname(), os.tmpname()
  local cmd = { "curl -s --max-time 10 -o", q(body_out), "-D", q(header_out), "-w '%{http_code}'" }
  cmd[#cmd + 1] = "-X " .. (opts.method or "PUT")
  local body_in
  if opts.body then
    body_in = os.tmpname()
    write_all(body_in, opts.body)
    cmd[#cmd + 1] = "-H 'Content-Type: application/json' --data-binary @" .. q(body_in)
  end
  for _, h in ipairs(opts.headers or {}) do
    cmd[#cmd + 1] = "-H " .. q(h)
  end
  cmd[#cmd + 1] = opts.args or ""
  cmd[#cmd + 1] = q(url)
  local p = io.popen(table.concat(cmd, " ") .. "; echo \" $?\"")
  local out = p:read("*a")
  p:close()

  local status, exit = out:match("(%d+) (%d+)%s*$")
  local res = { exit = tonumber(exit), status = tonumber(status), headers = {}, body = read_all(body_out) }
  -- With redirects or 100-continue several header blocks may be present: keep the last.
  for line in read_all(header_out):gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then res.headers[name:lower()] = value end
  end
  os.remove(body_out)
  os.remove(header_out)
  if body_in then os.remove(body_in) end
  return res
end

local n = 0
local function event_body(overrides)
  n = n + 1
  local e = {
    userId = "user-1",
    sessionId = "session-1",
    sessionStartPage = "https://shop.example/start",
    referrerUrl = cjson.null,
    hasCustomerAccount = false,
    customersId = cjson.null,
    event = "page_view",
    metadata = { n = n },
  }
  for k, v in pairs(overrides or {}) do
    if v == "__nil" then e[k] = nil else e[k] = v end
  end
  return cjson.encode(e)
end

local function decode(s)
  return cjson.decode(s)
end

describe("collector", function()
  local c

  setup(function()
    c = collector.start()
  end)

  teardown(function()
    c:stop()
  end)

  before_each(function()
    c:reset()
  end)

  it("answers health and exposes its addresses", function()
    assert.is_number(c.port)
    assert.equals("http://127.0.0.1:" .. c.port, c.base)
    assert.equals(c.base .. "/access/api/v1/analytics", c.url)
    local res = curl(c.base .. "/_collector/health", { method = "GET" })
    assert.equals(200, res.status)
    assert.equals("ok", res.body)
  end)

  it("accepts a valid event and logs it in both files", function()
    local body = event_body()
    local res = curl(c.url, {
      body = body,
      headers = { "Idempotency-Key: key-1", "X-Dukanext-Attempt: 1", "X-Forwarded-For: 10.0.0.1" },
    })
    assert.equals(0, res.exit)
    assert.equals(200, res.status)
    assert.equals("application/json", res.headers["content-type"])
    assert.same({ status = "success" }, decode(res.body))

    local events = c:events()
    assert.equals(1, #events)
    assert.same(decode(body), events[1])
    assert.equals(cjson.null, events[1].referrerUrl)

    local reqs = c:requests()
    assert.equals(1, #reqs)
    local r = reqs[1]
    assert.equals(1, r.seq)
    assert.equals("PUT", r.method)
    assert.equals(body, r.body)
    assert.equals(200, r.status)
    assert.equals("accepted", r.action)
    assert.equals("http", r.scheme)
    assert.equals(1.1, r.http_version)
    assert.is_number(r.time)
    assert.equals("key-1", r.headers.idempotency_key)
    assert.equals("1", r.headers.attempt)
    assert.equals("10.0.0.1", r.headers.x_forwarded_for)
    assert.equals("application/json", r.headers.content_type)
    assert.equals(tostring(#body), r.headers.content_length)
    assert.matches("^curl/", r.headers.user_agent)
  end)

  it("keeps multi-line JSON bodies as one event line", function()
    local body = '{\n  "userId": "u",\n  "sessionId": "s",\n  "event": "e",\n  "metadata": {}\n}\n'
    assert.equals(200, curl(c.url, { body = body }).status)
    assert.equals(1, #c:event_lines())
    assert.equals("e", c:events()[1].event)
  end)

  it("accepts requests from LuaSocket", function()
    local status, resp = collector.request("PUT", c.url, event_body())
    assert.equals(200, status)
    assert.equals('{"status":"success"}', resp)
    assert.equals(1, #c:events())
  end)

  it("rejects invalid bodies with the right code, in field order", function()
    local cases = {
      { event_body({ userId = "__nil" }), "INVALID_USER_ID" },
      { event_body({ userId = 42 }), "INVALID_USER_ID" },
      { event_body({ userId = cjson.null }), "INVALID_USER_ID" },
      { event_body({ userId = "__nil", event = "__nil" }), "INVALID_USER_ID" },
      { event_body({ sessionId = "__nil" }), "INVALID_SESSION_ID" },
      { event_body({ sessionId = false, event = 1 }), "INVALID_SESSION_ID" },
      { event_body({ event = "__nil" }), "INVALID_EVENT" },
      { event_body({ event = { "x" } }), "INVALID_EVENT" },
      { "not json", "INVALID_BODY" },
      { "[1, 2]", "INVALID_BODY" },
      { '"string"', "INVALID_BODY" },
      { "", "INVALID_BODY" },
    }
    for _, case in ipairs(cases) do
      local res = curl(c.url, { body = case[1] })
      assert.equals(400, res.status)
      local answer = decode(res.body)
      assert.equals("error", answer.status)
      assert.equals(case[2], answer.code)
      assert.is_string(answer.message)
    end
    assert.equals(0, #c:events())
    local reqs = c:requests()
    assert.equals(#cases, #reqs)
    for _, r in ipairs(reqs) do
      assert.equals("invalid", r.action)
      assert.equals(400, r.status)
    end
  end)

  it("answers 405 to other methods and 404 to unknown paths", function()
    local res = curl(c.url, { method = "POST", body = event_body() })
    assert.equals(405, res.status)
    assert.equals("PUT", res.headers["allow"])
    assert.equals(405, curl(c.url, { method = "GET" }).status)
    assert.equals(404, curl(c.base .. "/access/api/v1/other", { body = event_body() }).status)
    assert.equals(404, curl(c.base .. "/", { method = "GET" }).status)
    assert.equals(0, #c:events())
    assert.equals(2, #c:requests())
  end)

  it("logs every copy by default, and counts the 2xx answers of each Idempotency-Key", function()
    local body = event_body()
    for _, key in ipairs({ "key-a", "key-a", "key-b", "key-c", "key-c", "key-c" }) do
      assert.equals(200, curl(c.url, { body = body, headers = { "Idempotency-Key: " .. key } }).status)
    end
    c:plan({ { status = 500 } })
    assert.equals(500, curl(c.url, { body = body, headers = { "Idempotency-Key: key-d" } }).status)
    assert.equals(200, curl(c.url, { body = body, headers = { "Idempotency-Key: key-d" } }).status)
    assert.equals(200, curl(c.url, { body = body }).status) -- no key: not counted
    assert.equals(8, #c:events())
    for _, r in ipairs(c:requests()) do
      assert.is_not.equals("duplicate", r.action)
    end
    local counts, doubled = c:answers_by_key()
    assert.same({ ["key-a"] = 2, ["key-b"] = 1, ["key-c"] = 3, ["key-d"] = 1 }, counts)
    assert.same({ "key-a", "key-c" }, doubled)
  end)

  it("with dedupe, drops byte-identical duplicates as the service does, and forgets them on reset", function()
    local d = collector.start({ dedupe = true })
    finally(function() d:stop() end)
    local body = event_body()
    assert.equals(200, curl(d.url, { body = body }).status)
    local res = curl(d.url, { body = body })
    assert.equals(200, res.status)
    assert.same({ status = "success" }, decode(res.body))
    -- Same content, different bytes: not a duplicate.
    assert.equals(200, curl(d.url, { body = body .. " " }).status)
    assert.equals(2, #d:events())
    local reqs = d:requests()
    assert.equals("accepted", reqs[1].action)
    assert.equals("duplicate", reqs[2].action)
    assert.equals("accepted", reqs[3].action)
    d:reset()
    assert.equals(200, curl(d.url, { body = body }).status)
    assert.equals("accepted", d:requests()[1].action)
  end)

  it("drops bots by user agent, but not an empty one", function()
    local bots = { "Googlebot/2.1", "Mozilla/5.0 HeadlessChrome/120", "python-requests/2.31", "Yahoo! SLURP", "MyCrawler" }
    for _, ua in ipairs(bots) do
      local res = curl(c.url, { body = event_body(), headers = { "User-Agent: " .. ua } })
      assert.equals(200, res.status)
      assert.same({ status = "success" }, decode(res.body))
    end
    assert.equals(0, #c:events())
    for _, r in ipairs(c:requests()) do
      assert.equals("bot", r.action)
    end
    assert.equals(200, curl(c.url, { body = event_body(), headers = { "User-Agent:" } }).status)
    assert.equals(1, #c:events())
    assert.is_nil(c:requests()[#bots + 1].headers.user_agent)
  end)

  it("reads bodies spooled to a temp file and refuses bodies over 2 MiB", function()
    local big = event_body({ metadata = { pad = string.rep("x", 1500 * 1024) } })
    assert.equals(200, curl(c.url, { body = big }).status)
    assert.equals(big, c:event_lines()[1])
    local res = curl(c.url, { body = event_body({ metadata = { pad = string.rep("x", 2200 * 1024) } }) })
    assert.equals(413, res.status)
    assert.equals("BODY_TOO_LARGE", decode(res.body).code)
    local reqs = c:requests()
    assert.equals(2, #reqs)
    assert.equals(413, reqs[2].status)
  end)

  it("follows a plan of 500 then behaves normally", function()
    c:plan({ { status = 500 } })
    local body = event_body()
    local res = curl(c.url, { body = body })
    assert.equals(500, res.status)
    assert.same({ status = "error", code = "HTTP_500" }, decode(res.body))
    assert.equals(0, #c:events())
    -- The retry of the same bytes is not a duplicate: the 500 recorded nothing.
    assert.equals(200, curl(c.url, { body = body }).status)
    assert.equals(1, #c:events())
    local reqs = c:requests()
    assert.equals("planned", reqs[1].action)
    assert.equals(500, reqs[1].status)
    assert.equals("accepted", reqs[2].action)
  end)

  it("plans error codes, Retry-After, Location, custom bodies", function()
    c:plan({
      { status = 400, code = "INVALID_EVENT" },
      { status = 503, retry_after = "2" },
      { status = 429, retry_after = "Wed, 21 Oct 2015 07:28:00 GMT" },
      { status = 301, location = "file:///etc/passwd" },
      { status = 502, body = "<html>bad gateway</html>" },
    })
    local res = curl(c.url, { body = event_body() })
    assert.equals(400, res.status)
    assert.equals("INVALID_EVENT", decode(res.body).code)
    res = curl(c.url, { body = event_body() })
    assert.equals(503, res.status)
    assert.equals("2", res.headers["retry-after"])
    res = curl(c.url, { body = event_body() })
    assert.equals(429, res.status)
    assert.equals("Wed, 21 Oct 2015 07:28:00 GMT", res.headers["retry-after"])
    res = curl(c.url, { body = event_body() })
    assert.equals(301, res.status)
    assert.equals("file:///etc/passwd", res.headers["location"])
    res = curl(c.url, { body = event_body() })
    assert.equals(502, res.status)
    assert.equals("<html>bad gateway</html>", res.body)
    assert.equals(0, #c:events())
    assert.equals(200, curl(c.url, { body = event_body() }).status)
    assert.equals(1, #c:events())
  end)

  it("delays answers", function()
    c:plan({ { delay = 0.5 }, { delay = 0.3, status = 500 } })
    local t0 = socket.gettime()
    assert.equals(200, curl(c.url, { body = event_body() }).status)
    local t1 = socket.gettime()
    assert.equals(500, curl(c.url, { body = event_body() }).status)
    local t2 = socket.gettime()
    assert.is_true(t1 - t0 >= 0.45 and t1 - t0 < 2, "first took " .. (t1 - t0))
    assert.is_true(t2 - t1 >= 0.25 and t2 - t1 < 2, "second took " .. (t2 - t1))
    assert.equals(1, #c:events())
    local reqs = c:requests()
    assert.equals("planned", reqs[1].action)
    assert.equals("accepted", reqs[1].outcome)
    assert.equals(200, reqs[1].status)
  end)

  it("closes the connection without an answer", function()
    c:plan({ { close = true }, { close = true, process = true } })
    local res = curl(c.url, { body = event_body() })
    assert.equals(52, res.exit) -- curl: empty reply from server
    assert.equals(0, #c:events())
    res = curl(c.url, { body = event_body() })
    assert.equals(52, res.exit)
    assert.equals(1, #c:events()) -- process=true: received, then the answer was lost
    local reqs = c:requests()
    assert.equals(0, reqs[1].status)
    assert.equals("planned", reqs[1].action)
    assert.equals("accepted", reqs[2].outcome)
  end)

  it("applies a sticky default until the plan is replaced or reset", function()
    c:plan({ { status = 500 } }, { status = 503, retry_after = "1" })
    assert.equals(500, curl(c.url, { body = event_body() }).status)
    for _ = 1, 3 do
      local res = curl(c.url, { body = event_body() })
      assert.equals(503, res.status)
      assert.equals("1", res.headers["retry-after"])
    end
    c:plan({})
    assert.equals(200, curl(c.url, { body = event_body() }).status)
    c:plan({}, { status = 500 })
    assert.equals(500, curl(c.url, { body = event_body() }).status)
    assert.equals(6, #c:requests())
    c:reset()
    assert.equals(0, #c:requests())
    assert.equals(0, #c:events())
    assert.equals(200, curl(c.url, { body = event_body() }).status)
    assert.equals(1, c:requests()[1].seq)
  end)

  it("rejects malformed plans", function()
    local status = collector.request("PUT", c.base .. "/_collector/plan", '{"actions":[1]}')
    assert.equals(400, status)
    status = collector.request("PUT", c.base .. "/_collector/plan", "nope")
    assert.equals(400, status)
  end)

  it("waits for events and requests", function()
    assert.equals(0, #c:wait_events(1, 0.1))
    assert.equals(200, curl(c.url, { body = event_body() }).status)
    assert.equals(1, #c:wait_events(1))
    assert.equals(1, #c:wait_requests(1))
  end)

  it("keeps working, and keeps its plan, across a reload", function()
    c:plan({ { status = 500 }, { status = 502 } })
    assert.equals(500, curl(c.url, { body = event_body() }).status)
    c:reload()
    assert.equals(502, curl(c.url, { body = event_body() }).status)
    assert.equals(200, curl(c.url, { body = event_body() }).status)
    assert.equals(1, #c:events())
    assert.equals(3, #c:requests())
  end)
end)

describe("collector with two workers", function()
  it("shares one plan between them", function()
    local c = collector.start({ workers = 2, dedupe = true })
    finally(function() c:stop() end)
    local plan = {}
    for i = 1, 8 do plan[i] = { delay = 0.2, status = 500 } end
    c:plan(plan)
    local body_file = os.tmpname()
    write_all(body_file, event_body())
    -- Concurrent requests, each on its own connection; reuseport spreads them.
    local cmd = {}
    for _ = 1, 16 do
      cmd[#cmd + 1] = "curl -s -o /dev/null -w '%{http_code}\\n' -X PUT --data-binary @" .. q(body_file)
        .. " " .. q(c.url) .. " &"
    end
    local p = io.popen(table.concat(cmd, " ") .. " wait")
    local out = p:read("*a")
    p:close()
    os.remove(body_file)

    local counts = {}
    for code in out:gmatch("%d+") do counts[code] = (counts[code] or 0) + 1 end
    assert.same({ ["500"] = 8, ["200"] = 8 }, counts)
    local reqs = c:wait_requests(16)
    assert.equals(16, #reqs)
    local workers, distinct = {}, 0
    for _, r in ipairs(reqs) do
      if not workers[r.worker] then distinct = distinct + 1 end
      workers[r.worker] = true
    end
    -- 16 connections all hashed to one worker: p = 2^-15.
    assert.equals(2, distinct)
    assert.equals(1, #c:events()) -- same bytes each time: one accepted, the rest duplicates
  end)
end)

describe("collector over TLS", function()
  it("serves https with a certificate signed by ca_file", function()
    local c = collector.start({ tls = true })
    finally(function() c:stop() end)
    assert.equals("https://127.0.0.1:" .. c.tls_port .. "/access/api/v1/analytics", c.tls_url)
    local res = curl(c.tls_url, { body = event_body(), args = "--cacert " .. q(c.ca_file) })
    assert.equals(0, res.exit)
    assert.equals(200, res.status)
    local by_name = "https://localhost:" .. c.tls_port .. "/access/api/v1/analytics"
    assert.equals(200, curl(by_name, { body = event_body(), args = "--cacert " .. q(c.ca_file) }).status)
    assert.equals(60, curl(c.tls_url, { body = event_body() }).exit) -- untrusted without the CA
    -- Plain HTTP keeps working next to TLS.
    assert.equals(200, curl(c.url, { body = event_body() }).status)
    local reqs = c:requests()
    assert.equals("https", reqs[1].scheme)
    assert.equals("http", reqs[#reqs].scheme)
    assert.equals(3, #c:events())
  end)

  it("speaks HTTP/2 over TLS and h2c with prior knowledge", function()
    local c = collector.start({ tls = true, http2 = true })
    finally(function() c:stop() end)
    c:plan({ { status = 503, retry_after = "3" } })
    local res = curl(c.tls_url, { body = event_body(), args = "--http2 --cacert " .. q(c.ca_file) })
    assert.equals(503, res.status)
    assert.equals("3", res.headers["retry-after"])
    assert.equals(200, curl(c.tls_url, { body = event_body(), args = "--http2 --cacert " .. q(c.ca_file) }).status)
    assert.equals(200, curl(c.url, { body = event_body(), args = "--http2-prior-knowledge" }).status)
    local reqs = c:requests()
    assert.equals(3, #reqs)
    for _, r in ipairs(reqs) do assert.equals(2, r.http_version) end
    assert.equals(2, #c:events())
  end)
end)

describe("collector lifecycle", function()
  it("stops nginx and removes its directory", function()
    local c = collector.start({ keep = false })
    local dir, pid = c.dir, c.pid
    c:stop()
    assert.is_nil(io.open(dir .. "/nginx.conf"))
    -- Gone, or a zombie when nobody reaps orphans (as in some containers).
    local state = read_all("/proc/" .. pid .. "/stat"):match("^%d+ %b() (%a)")
    assert.is_true(state == nil or state == "Z")
    c:stop() -- idempotent
  end)

  it("fails to start with the error log in the message", function()
    local c = collector.start()
    finally(function() c:stop() end)
    local ok, err = pcall(collector.start, { port = c.port })
    assert.is_false(ok)
    assert.matches("Address already in use", err, 1, true)
  end)

  it("hands out free ports", function()
    local port = collector.free_port()
    assert.is_true(port > 0 and port < 65536)
  end)
end)
