-- Retries: which answers are retried and which fail for good, what every attempt
-- carries, backoff and Retry-After, redirects.
local helpers = require("spec.helpers")

local dn = helpers.dn()
local now = helpers.now

-- The collector's request records for one event name, in arrival order.
local function requests_of(records, name)
  local list = {}
  for _, r in ipairs(records) do
    if helpers.decode(r.body).event == name then list[#list + 1] = r end
  end
  table.sort(list, function(x, y) return x.seq < y.seq end)
  return list
end

local function field(list, key)
  local values = {}
  for i, r in ipairs(list) do values[i] = r[key] end
  return values
end

local function header(list, key)
  local values = {}
  for i, r in ipairs(list) do values[i] = r.headers[key] end
  return values
end

-- Every attempt of one event: one Idempotency-Key (a uuid) and one body, byte for byte.
local function assert_same_event(list)
  assert.matches("^" .. helpers.UUID .. "$", list[1].headers.idempotency_key)
  for i = 2, #list do
    assert.equals(list[1].headers.idempotency_key, list[i].headers.idempotency_key)
    assert.equals(list[1].body, list[i].body)
  end
end

local function http_date(seconds_from_now)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + seconds_from_now)
end

describe("retries", function()
  local c
  local clients = {}
  local errors

  -- A client of the collector with quick retries that records what on_error gets.
  local function client(opts)
    opts = helpers.fast(opts)
    opts.endpoint = opts.endpoint or c.url
    opts.on_error = opts.on_error or function(err) errors[#errors + 1] = err end
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
    errors = {}
  end)

  after_each(function()
    for i = #clients, 1, -1 do
      clients[i]:close()
      clients[i] = nil
    end
  end)

  describe("of an answer that may succeed later", function()
    for _, status in ipairs({ 500, 502, 503, 504, 408, 429 }) do
      it("retry a " .. status .. " with the same body and key, then deliver", function()
        c:plan({ { status = status }, { status = status } })
        local cl = client({ max_retries = 5 })
        assert.is_true(cl:emit("retried", { status = status }))
        assert.is_true(cl:flush(5))

        local list = requests_of(c:requests(), "retried")
        assert.same({ status, status, 200 }, field(list, "status"))
        assert.same({ "1", "2", "3" }, header(list, "attempt"))
        assert_same_event(list)
        assert.equals(1, #c:events())
        local s = cl:stats()
        assert.equals(1, s.sent)
        assert.equals(0, s.failed)
        assert.equals(2, s.retries)
        assert.same({}, errors)
      end)
    end
  end)

  describe("of an answer that will not change", function()
    local cases = {
      { plan = { status = 501 }, code = "HTTP_501" },
      { plan = { status = 505 }, code = "HTTP_505" },
      { plan = { status = 400, code = "INVALID_USER_ID" }, code = "INVALID_USER_ID" },
      { plan = { status = 400, code = "INVALID_SESSION_ID" }, code = "INVALID_SESSION_ID" },
      { plan = { status = 400, code = "INVALID_EVENT" }, code = "INVALID_EVENT" },
      { plan = { status = 401 }, code = "HTTP_401" },
      -- Not JSON: the code falls back to HTTP_<status>.
      { plan = { status = 403, body = "forbidden" }, code = "HTTP_403" },
      -- JSON without a code: likewise.
      { plan = { status = 404, body = { status = "error", message = "no route" } }, code = "HTTP_404" },
      { plan = { status = 413, code = "BODY_TOO_LARGE" }, code = "BODY_TOO_LARGE" },
    }
    for _, case in ipairs(cases) do
      local status = case.plan.status
      it("fail a " .. status .. " for good, reported as " .. case.code, function()
        -- Anything after the planned answer would be accepted, so a retry would show.
        c:plan({ case.plan })
        local cl = client({ max_retries = 5 })
        assert.is_true(cl:emit("refused", { status = status }))
        assert.is_true(cl:flush(5))

        local list = requests_of(c:requests(), "refused")
        assert.equals(1, #list)
        assert.equals(status, list[1].status)
        local s = cl:stats()
        assert.equals(0, s.sent)
        assert.equals(1, s.failed)
        assert.equals(0, s.retries)

        assert.equals(1, #errors)
        local err = errors[1]
        assert.equals(case.code, err.code)
        assert.equals(status, err.status)
        assert.equals("refused", err.event)
        assert.equals(1, err.attempts)
        assert.equals(list[1].body, err.body)
        assert.is_string(err.message)
      end)
    end
  end)

  it("stops after max_retries further attempts", function()
    c:plan({}, { status = 500 })
    local cl = client({ max_retries = 2 })
    assert.is_true(cl:emit("always_500"))
    assert.is_true(cl:flush(5))

    local list = requests_of(c:requests(), "always_500")
    assert.same({ "1", "2", "3" }, header(list, "attempt"))
    assert_same_event(list)
    assert.equals(1, #errors)
    assert.equals("HTTP_500", errors[1].code)
    assert.equals(500, errors[1].status)
    assert.equals(3, errors[1].attempts)
    assert.equals("always_500", errors[1].event)
    local s = cl:stats()
    assert.equals(1, s.failed)
    assert.equals(2, s.retries)
  end)

  it("makes a single attempt with max_retries = 0", function()
    c:plan({ { status = 503 } })
    local cl = client({ max_retries = 0 })
    assert.is_true(cl:emit("once"))
    assert.is_true(cl:flush(5))

    assert.equals(1, #requests_of(c:requests(), "once"))
    assert.equals(1, #errors)
    assert.equals("HTTP_503", errors[1].code)
    assert.equals(1, errors[1].attempts)
    assert.equals(0, cl:stats().retries)
  end)

  describe("of transport failures", function()
    it("retry a connection closed without an answer, then deliver", function()
      -- libcurl itself resends once on a reused connection that died, so two
      -- closes make sure dukanext has to retry.
      c:plan({ { close = true }, { close = true } })
      local cl = client({ max_retries = 5 })
      assert.is_true(cl:emit("after_close"))
      assert.is_true(cl:flush(5))

      assert.equals(1, #c:events())
      local s = cl:stats()
      assert.equals(1, s.sent)
      assert(s.retries >= 1, "no retry after a closed connection")
      local list = requests_of(c:requests(), "after_close")
      assert.equals(tostring(s.retries + 1), list[#list].headers.attempt)
      assert_same_event(list)
      assert.same({}, errors)
    end)

    -- No network is waited out whatever max_retries says, until max_age after emit;
    -- the report is then EXPIRED and names the last failure.
    local function assert_expired(err, name, failure)
      assert.equals("EXPIRED", err.code)
      assert.is_nil(err.status)
      assert.equals(name, err.event)
      assert.matches(failure, err.message, 1, true)
    end

    -- Each requeued attempt counts a retry; the last one either expired when it
    -- ended (no retry) or while it waited (its retry already counted).
    local function assert_retries(stats, attempts)
      assert(stats.retries == attempts - 1 or stats.retries == attempts,
        stats.retries .. " retries for " .. attempts .. " attempts")
    end

    it("wait out a connection that keeps closing past max_retries, then report EXPIRED naming NETWORK_ERROR", function()
      c:plan({}, { close = true })
      local cl = client({ max_retries = 1, max_age = 1 })
      assert.is_true(cl:emit("always_closed"))
      assert.is_true(cl:flush(5))

      assert.equals(1, #errors)
      assert_expired(errors[1], "always_closed", "NETWORK_ERROR")
      assert(errors[1].attempts >= 3, errors[1].attempts .. " attempts")
      assert_retries(cl:stats(), errors[1].attempts)
      assert.equals(1, cl:stats().failed)
      assert.equals(0, #c:events())
    end)

    it("wait out a refused connection past max_retries, then report EXPIRED naming CONNECT_ERROR", function()
      local port = helpers.collector_lib.free_port()
      local cl = client({
        endpoint = "http://127.0.0.1:" .. port .. "/access/api/v1/analytics",
        max_retries = 1, max_age = 1,
      })
      assert.is_true(cl:emit("refused_connection"))
      assert.is_true(cl:flush(5))

      assert.equals(1, #errors)
      assert_expired(errors[1], "refused_connection", "CONNECT_ERROR")
      assert(errors[1].attempts >= 3, errors[1].attempts .. " attempts")
      local s = cl:stats()
      assert.equals(1, s.failed)
      assert_retries(s, errors[1].attempts)
    end)

    it("wait out an answer slower than timeout, then report EXPIRED naming TIMEOUT #timing", function()
      c:plan({}, { delay = 2, status = 500 })
      local cl = client({ timeout = 0.3, max_retries = 0, max_age = 0.5 })
      assert.is_true(cl:emit("too_slow"))
      local t0 = now()
      assert.is_true(cl:flush(5))
      local elapsed = now() - t0

      assert(elapsed < helpers.within(1.5), "0.3 s attempts for 0.5 s took " .. elapsed .. " s")
      assert.equals(1, #errors)
      assert_expired(errors[1], "too_slow", "TIMEOUT")
      local attempts = errors[1].attempts
      assert(attempts >= 1 and attempts <= 2, attempts .. " attempts of 0.3 s within 0.5 s")
      assert_retries(cl:stats(), attempts)

      -- The collector logs a held request when it answers it, 2 s after it came.
      local list = requests_of(c:wait_requests(attempts, 4), "too_slow")
      local numbers = {}
      for i = 1, attempts do numbers[i] = tostring(i) end
      assert.same(numbers, header(list, "attempt"))
      assert_same_event(list)
    end)
  end)

  describe("with Retry-After #timing", function()
    it("in seconds pauses every send of the client, not other clients", function()
      c:plan({ { status = 503, retry_after = "1" } })
      local paused = client({ retry_max = 5 })
      local other = client()
      assert.is_true(paused:emit("told_to_wait"))
      assert.is_true(helpers.pump_until(function() return paused:stats().retries == 1 end, 3))

      -- Waiting for its retry, the event counts as queued.
      local s = paused:stats()
      assert.equals(1, s.queued)
      assert.equals(0, s.in_flight)

      assert.is_true(paused:emit("emitted_meanwhile"))
      assert.is_true(other:emit("other_client"))
      assert.is_true(helpers.pump_until(function()
        return paused:stats().sent == 2 and other:stats().sent == 1
      end, 5))

      local records = c:requests()
      local first = requests_of(records, "told_to_wait")
      local meanwhile = requests_of(records, "emitted_meanwhile")
      local unrelated = requests_of(records, "other_client")
      assert.same({ 503, 200 }, field(first, "status"))
      assert.equals(1, #meanwhile)
      assert.equals(1, #unrelated)
      local answered = first[1].time
      local retry_gap = first[2].time - answered
      local meanwhile_gap = meanwhile[1].time - answered
      local other_gap = unrelated[1].time - answered
      assert(retry_gap >= 0.9, "retried " .. retry_gap .. " s after Retry-After: 1")
      assert(meanwhile_gap >= 0.9, "another event went out " .. meanwhile_gap .. " s after Retry-After: 1")
      assert(other_gap < helpers.within(0.5), "another client waited " .. other_gap .. " s")
      assert.same({}, errors)
    end)

    it("pauses the client even when the event that got it has no retry left", function()
      c:plan({ { status = 503, retry_after = "1" } })
      local cl = client({ retry_max = 5, max_retries = 0, max_in_flight = 1 })
      assert.is_true(cl:emit("last_attempt"))
      assert.is_true(cl:emit("next_in_line"))
      assert.is_true(cl:flush(5))

      local records = c:requests()
      local told = requests_of(records, "last_attempt")
      local next_one = requests_of(records, "next_in_line")
      assert.same({ 503 }, field(told, "status"))
      assert.same({ 200 }, field(next_one, "status"))
      assert.equals("HTTP_503", errors[1].code)
      local gap = next_one[1].time - told[1].time
      assert(gap >= 0.9, "the next event went out " .. gap .. " s after Retry-After: 1")
    end)

    it("as an HTTP date is honoured", function()
      c:plan({ { status = 503, retry_after = http_date(2) } })
      local cl = client({ retry_max = 10 })
      assert.is_true(cl:emit("dated"))
      assert.is_true(cl:flush(6))

      local list = requests_of(c:requests(), "dated")
      assert.same({ 503, 200 }, field(list, "status"))
      local gap = list[2].time - list[1].time
      -- Whole seconds: a date 2 s ahead is 1 to 2 s away.
      assert(gap >= 0.9 and gap < helpers.within(3.5), "retried " .. gap .. " s after a date 2 s ahead")
    end)

    it("is capped at retry_max", function()
      c:plan({ { status = 429, retry_after = "30" } })
      local cl = client({ retry_max = 0.5 })
      assert.is_true(cl:emit("capped"))
      assert.is_true(cl:flush(5))

      local list = requests_of(c:requests(), "capped")
      assert.same({ 429, 200 }, field(list, "status"))
      local gap = list[2].time - list[1].time
      assert(gap < 1.5, "retried " .. gap .. " s after Retry-After: 30 with retry_max 0.5")
    end)

    it("applies to the answer that carried it only", function()
      -- One slot, so the second answer is read by the same easy handle.
      c:plan({ { status = 503, retry_after = "1" }, { status = 500 } })
      local cl = client({ retry_max = 5, max_in_flight = 1 })
      assert.is_true(cl:emit("paused_once"))
      assert.is_true(cl:flush(6))

      local list = requests_of(c:requests(), "paused_once")
      assert.same({ 503, 500, 200 }, field(list, "status"))
      assert(list[2].time - list[1].time >= 0.9, "Retry-After: 1 was not honoured")
      local gap = list[3].time - list[2].time
      assert(gap < helpers.within(0.5), "a 500 without Retry-After waited " .. gap .. " s")
    end)
  end)

  it("waits at most the full-jitter ceiling between attempts #timing", function()
    c:plan({}, { status = 500 })
    local cl = client({ retry_base = 0.2, retry_max = 0.2, max_retries = 2 })
    assert.is_true(cl:emit("jittered"))
    assert.is_true(cl:flush(5))

    local list = requests_of(c:requests(), "jittered")
    assert.equals(3, #list)
    for i = 2, 3 do
      local gap = list[i].time - list[i - 1].time
      assert(gap <= 0.2 + helpers.within(0.15), "attempt " .. i .. " came " .. gap .. " s after the previous one")
    end
    assert.equals("HTTP_500", errors[1].code)
  end)

  describe("of redirects", function()
    for _, status in ipairs({ 301, 302, 303, 307, 308 }) do
      it("follow a " .. status .. " with PUT and the same body", function()
        c:plan({ { status = status, location = c.url } })
        local cl = client()
        assert.is_true(cl:emit("redirected", { status = status }))
        assert.is_true(cl:flush(5))

        local list = requests_of(c:requests(), "redirected")
        assert.same({ status, 200 }, field(list, "status"))
        assert.same({ "PUT", "PUT" }, field(list, "method"))
        -- One attempt: libcurl follows the redirect within it.
        assert.same({ "1", "1" }, header(list, "attempt"))
        assert_same_event(list)
        assert.equals(1, #c:events())
        local s = cl:stats()
        assert.equals(1, s.sent)
        assert.equals(0, s.retries)
      end)
    end

    it("never follow one to file://, and fail without retrying", function()
      local path = os.tmpname()
      local planted = '{"code":"FILE_WAS_READ"}'
      local f = assert(io.open(path, "wb"))
      f:write(planted)
      f:close()
      finally(function() os.remove(path) end)

      c:plan({ { status = 301, location = "file://" .. path } })
      local cl = client({ max_retries = 3 })
      assert.is_true(cl:emit("to_file"))
      assert.is_true(cl:flush(5))

      assert.equals(1, #requests_of(c:requests(), "to_file"))
      assert.equals(1, #errors)
      assert.equals("PROTOCOL_ERROR", errors[1].code)
      assert.equals(1, errors[1].attempts)
      assert.equals(0, cl:stats().retries)
      -- A PUT to file:// would have overwritten it.
      f = assert(io.open(path, "rb"))
      assert.equals(planted, f:read("*a"))
      f:close()
    end)

    it("never follow one to gopher://, and fail without retrying", function()
      local port = helpers.collector_lib.free_port()
      c:plan({ { status = 302, location = "gopher://127.0.0.1:" .. port .. "/" } })
      local cl = client({ max_retries = 3 })
      assert.is_true(cl:emit("to_gopher"))
      assert.is_true(cl:flush(5))

      assert.equals(1, #requests_of(c:requests(), "to_gopher"))
      assert.equals(1, #errors)
      assert.equals("PROTOCOL_ERROR", errors[1].code)
      assert.equals(1, errors[1].attempts)
      assert.equals(0, cl:stats().retries)
    end)

    it("stop after three, with REDIRECT_ERROR and no retry", function()
      local loop = { status = 307, location = c.url }
      c:plan({}, loop)
      local cl = client({ max_retries = 3 })
      assert.is_true(cl:emit("redirect_loop"))
      assert.is_true(cl:flush(5))

      local list = requests_of(c:requests(), "redirect_loop")
      assert.equals(4, #list)
      assert.same({ "1", "1", "1", "1" }, header(list, "attempt"))
      assert.equals(1, #errors)
      assert.equals("REDIRECT_ERROR", errors[1].code)
      assert.equals(1, errors[1].attempts)
      assert.equals(0, cl:stats().retries)
    end)
  end)
end)
