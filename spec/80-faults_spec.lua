-- Fault suite: one row per way the service or the network can fail, each against a
-- collector of its own (so no connection is reused from another row). For every row:
-- the attempts the collector saw, one body and one Idempotency-Key over them, the
-- backoff between them (or the pause a Retry-After imposes on the whole client), what
-- on_error got, and stats(). 60-retry_spec.lua checks the single rules; this file
-- checks every facet of each fault together.
local helpers = require("spec.helpers")

local dn = helpers.dn()
local now = helpers.now
local within = helpers.within

local MB = 1024 * 1024
local API = "/access/api/v1/analytics"

-- Every row's client: three attempts, small but measurable backoff ceilings.
-- (Under valgrind a TLS handshake alone may take a second.)
local BASE = {
  retry_base = 0.1, retry_max = 0.4, max_retries = 2,
  timeout = within(2), connect_timeout = within(1),
}

-- Slack over a backoff ceiling: the pump, the request and the collector's clock.
local SLACK = 0.25

local function http_date(seconds_from_now)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + seconds_from_now)
end

-- Full jitter draws the pause after the n-th attempt from [0, ceiling(n)].
local function ceiling(opts, n)
  return math.min(opts.retry_max, opts.retry_base * 2 ^ (n - 1))
end

local function requests_of(records, name)
  local list = {}
  for _, r in ipairs(records) do
    local ok, body = pcall(helpers.decode, r.body)
    if ok and type(body) == "table" and body.event == name then list[#list + 1] = r end
  end
  table.sort(list, function(x, y) return x.seq < y.seq end)
  return list
end

local function field(list, key)
  local values = {}
  for i, r in ipairs(list) do values[i] = r[key] end
  return values
end

local function attempts_header(list)
  local values = {}
  for i, r in ipairs(list) do values[i] = r.headers.attempt end
  return values
end

local function count_up(n)
  local list = {}
  for i = 1, n do list[i] = tostring(i) end
  return list
end

-- A file a redirect to file:// would read, or overwrite with a PUT.
local planted_path = os.tmpname()
local PLANTED = '{"code":"FILE_WAS_READ"}'

-- name: what fails. plan / default: the collector's script (a function of the
-- collector when it needs its address). endpoint: "http" (default), "tls", "refused"
-- or a URL. opts: over BASE. statuses: what the collector logged, in order (0: the
-- connection was closed without an answer). attempts: made by the client (default
-- #statuses). delivered, or code / status: what on_error gets. pause = {min, max}:
-- seconds a Retry-After holds the next attempt, and any other event of the client
-- (a probe is emitted while it holds). attempt_time: seconds an attempt lasts before
-- it fails (a timeout). logged_late: the collector logs those attempts when it gives
-- up holding them. unread_body: the collector logs the request with an empty body.
-- expired: a failure that means no network, waited out whatever max_retries says
-- until max_age (in opts), then reported as EXPIRED naming this code; statuses then
-- holds what each attempt logged, however many there were.
local rows = {
  { name = "500, twice", plan = { { status = 500 }, { status = 500 } },
    statuses = { 500, 500, 200 }, delivered = true },
  { name = "502", plan = { { status = 502 } }, statuses = { 502, 200 }, delivered = true },
  { name = "503 with Retry-After in seconds",
    plan = { { status = 503, retry_after = "1" } }, opts = { retry_max = 5 },
    statuses = { 503, 200 }, delivered = true, pause = { 1, 1 } },
  { name = "503 with Retry-After as an HTTP-date",
    plan = function() return { { status = 503, retry_after = http_date(2) } } end,
    opts = { retry_max = 5 },
    -- Whole seconds: a date 2 s ahead is 1 to 2 s away.
    statuses = { 503, 200 }, delivered = true, pause = { 1, 2 } },
  { name = "503 with a Retry-After over retry_max",
    plan = { { status = 503, retry_after = "30" } }, opts = { retry_max = 0.5 },
    statuses = { 503, 200 }, delivered = true, pause = { 0.5, 0.5 } },
  { name = "429, three times: failed after max_retries",
    plan = { { status = 429 }, { status = 429 }, { status = 429 } },
    statuses = { 429, 429, 429 }, code = "HTTP_429", status = 429 },
  { name = "429 with Retry-After", plan = { { status = 429, retry_after = "1" } },
    opts = { retry_max = 5 }, statuses = { 429, 200 }, delivered = true, pause = { 1, 1 } },
  { name = "408", plan = { { status = 408 } }, statuses = { 408, 200 }, delivered = true },
  { name = "501", plan = { { status = 501 } }, statuses = { 501 }, code = "HTTP_501", status = 501 },
  { name = "400 INVALID_USER_ID", plan = { { status = 400, code = "INVALID_USER_ID" } },
    statuses = { 400 }, code = "INVALID_USER_ID", status = 400 },
  { name = "400 INVALID_SESSION_ID", plan = { { status = 400, code = "INVALID_SESSION_ID" } },
    statuses = { 400 }, code = "INVALID_SESSION_ID", status = 400 },
  { name = "400 INVALID_EVENT", plan = { { status = 400, code = "INVALID_EVENT" } },
    statuses = { 400 }, code = "INVALID_EVENT", status = 400 },
  { name = "400 with a code that is not an identifier",
    plan = { { status = 400, body = { status = "error", code = "bad code\r\nX: 1" } } },
    statuses = { 400 }, code = "HTTP_400", status = 400 },
  { name = "401", plan = { { status = 401 } }, statuses = { 401 }, code = "HTTP_401", status = 401 },
  { name = "404", plan = { { status = 404 } }, statuses = { 404 }, code = "HTTP_404", status = 404 },
  { name = "413 from the collector's own body limit (2 MiB)", opts = { max_body = 3 * MB },
    metadata = { blob = string.rep("x", 2.5 * MB) },
    -- nginx refuses the body unread, so the collector logs the request without it.
    unread_body = true, statuses = { 413 }, code = "BODY_TOO_LARGE", status = 413 },
  { name = "connection refused", endpoint = "refused", opts = { max_age = 1 }, statuses = {},
    expired = "CONNECT_ERROR" },
  { name = "connection closed with no answer", default = { close = true },
    opts = { max_age = 1 }, statuses = { 0 }, expired = "NETWORK_ERROR" },
  { name = "connection closed once, then an answer", plan = { { close = true } },
    statuses = { 0, 200 }, delivered = true },
  { name = "an answer slower than timeout", default = { delay = 1.2, status = 500 },
    opts = { timeout = 0.3, max_age = 1 }, statuses = { 500 }, expired = "TIMEOUT",
    attempt_time = 0.3, logged_late = true },
  { name = "a name that does not resolve (.invalid)",
    endpoint = "http://dukanext-fault.invalid" .. API,
    opts = { connect_timeout = 0.5, max_age = 1 }, statuses = {}, expired = "DNS_ERROR",
    deadline = 0.2 },
  { name = "TLS with an untrusted certificate", tls = true, endpoint = "tls",
    statuses = {}, attempts = 1, code = "TLS_ERROR" },
  { name = "TLS trusted via ca_file", tls = true, endpoint = "tls",
    opts = function(c) return { ca_file = c.ca_file } end,
    statuses = { 200 }, delivered = true, scheme = "https" },
  { name = "a redirect to file://",
    plan = { { status = 301, location = "file://" .. planted_path } },
    statuses = { 301 }, code = "PROTOCOL_ERROR" },
  { name = "a redirect to ftp://",
    plan = function() return { { status = 302, location = "ftp://127.0.0.1:" .. helpers.collector_lib.free_port() .. "/" } } end,
    statuses = { 302 }, code = "PROTOCOL_ERROR" },
  { name = "a redirect to http:// without a host", plan = { { status = 307, location = "http://" } },
    statuses = { 307 }, code = "URL_ERROR" },
}

local function resolve(value, c)
  if type(value) == "function" then return value(c) end
  return value
end

local function row_options(row, c)
  local opts = {}
  for k, v in pairs(BASE) do opts[k] = v end
  for k, v in pairs(resolve(row.opts, c) or {}) do opts[k] = v end
  return opts
end

local function row_endpoint(row, c)
  if row.endpoint == "tls" then return c.tls_url end
  if row.endpoint == "refused" then
    return "http://127.0.0.1:" .. helpers.collector_lib.free_port() .. API
  end
  return row.endpoint or c.url
end

describe("faults", function()
  lazy_setup(function()
    local f = assert(io.open(planted_path, "wb"))
    f:write(PLANTED)
    f:close()
  end)

  lazy_teardown(function()
    os.remove(planted_path)
  end)

  for _, row in ipairs(rows) do
    it(row.name, function()
      local c = helpers.start_collector({ tls = row.tls })
      local cl
      finally(function()
        if cl then cl:close() end
        c:stop()
      end)
      local plan, default = resolve(row.plan, c), row.default
      if plan or default then c:plan(plan or {}, default) end

      local errors = {}
      local opts = row_options(row, c)
      opts.endpoint = row_endpoint(row, c)
      opts.on_error = function(err) errors[#errors + 1] = err end
      cl = dn.new(opts)

      local metadata = row.metadata or { row = row.name }
      assert.is_true(cl:emit("fault", metadata))
      local t0 = now()

      if row.pause then
        -- While the Retry-After holds, another event of the client waits too.
        assert.is_true(helpers.pump_until(function() return cl:stats().retries == 1 end, within(3)))
        assert.is_true(cl:emit("probe", { row = row.name }))
      end
      if row.deadline then
        -- flush(t) keeps its deadline whatever the resolver does.
        local d0 = now()
        local ok, err = cl:flush(row.deadline)
        local took = now() - d0
        assert(ok == true or err == "TIMEOUT", "flush answered " .. tostring(ok) .. ", " .. tostring(err))
        assert(took < row.deadline + within(0.3), "flush(" .. row.deadline .. ") took " .. took .. " s")
      end
      assert.is_true(cl:flush(within(10)))
      local elapsed = now() - t0

      -- How many attempts an expired event had depends on the clock: its report says.
      local attempts = row.attempts or #row.statuses
      local statuses = row.statuses
      if row.expired then
        assert.equals(1, #errors)
        attempts = errors[1].attempts
        assert(attempts >= 2, attempts .. " attempts within max_age")
        statuses = {}
        for i = 1, #row.statuses > 0 and attempts or 0 do statuses[i] = row.statuses[1] end
      end

      -- What the collector saw: one request per attempt, numbered from 1.
      local records = row.logged_late and c:wait_requests(#statuses, within(5)) or c:requests()
      local list = row.unread_body and records or requests_of(records, "fault")
      assert.same(statuses, field(list, "status"))
      assert.same(count_up(#list), attempts_header(list))
      if not row.pause then
        assert.equals(#list, #records, "the collector saw requests of no event")
      end

      -- One event: the same body byte for byte and the same Idempotency-Key.
      for _, r in ipairs(list) do
        assert.matches("^" .. helpers.UUID .. "$", r.headers.idempotency_key)
        assert.equals(list[1].headers.idempotency_key, r.headers.idempotency_key)
        assert.equals(list[1].body, r.body)
        assert.equals("PUT", r.method)
        assert.equals(API, r.uri)
        if row.scheme then assert.equals(row.scheme, r.scheme) end
      end

      -- Backoff: within the full-jitter ceiling, or the Retry-After pause.
      for i = 2, #list do
        local gap = list[i].time - list[i - 1].time
        if row.pause and i == 2 then
          assert(gap >= row.pause[1] - 0.1, "retried " .. gap .. " s after a pause of " .. row.pause[1] .. " s")
          assert(gap <= row.pause[2] + within(0.6), "retried " .. gap .. " s after a pause of at most " .. row.pause[2] .. " s")
        else
          local most = (row.attempt_time or 0) + ceiling(opts, i - 1) + within(SLACK)
          assert(gap <= most, "attempt " .. i .. " came " .. gap .. " s after attempt " .. (i - 1)
            .. " (at most " .. most .. " s)")
        end
      end
      if row.expired then
        -- Given up at max_age, or at the end of the attempt under way then.
        assert(elapsed >= opts.max_age - 0.05, "given up after " .. elapsed .. " s")
        local most = opts.max_age + (row.attempt_time or 0) + opts.retry_max
        assert(elapsed <= most + within(0.5), "given up after " .. elapsed .. " s")
      elseif #list == 0 then
        -- Nothing logged: bound the whole run by the ceilings instead.
        local most = within(SLACK)
        for n = 1, attempts - 1 do most = most + ceiling(opts, n) end
        assert(elapsed <= most + within(0.5), attempts .. " attempts took " .. elapsed .. " s")
      end

      -- The pause held every event of the client, not only the one that got it.
      if row.pause then
        local probe = requests_of(records, "probe")
        assert.same({ 200 }, field(probe, "status"))
        local gap = probe[1].time - list[1].time
        assert(gap >= row.pause[1] - 0.1, "the probe went out " .. gap .. " s after the Retry-After")
        assert.equals(#list + 1, #records)
      end

      -- on_error and stats. The connection counters and the concurrency limit have
      -- their own spec (62-concurrency): here they only have to be there.
      local sent = (row.delivered and 1 or 0) + (row.pause and 1 or 0)
      local stats = cl:stats()
      for _, key in ipairs({ "in_flight_limit", "latency_ms", "connections", "connects", "tls_resumed" }) do
        assert.is_number(stats[key], key)
        stats[key] = nil
      end
      -- Each requeued attempt counts a retry; an event that expired while it waited
      -- had its last retry counted too.
      local retries = attempts - 1
      if row.expired and stats.retries == attempts then retries = attempts end
      assert.same({
        queued = 0, in_flight = 0, sent = sent, failed = row.delivered and 0 or 1,
        dropped = 0, dropped_max_queue = 0, dropped_max_queue_bytes = 0, queued_bytes = 0,
        retries = retries, cancelled = 0, dropped_spool_max_bytes = 0, replayed = 0,
        unspooled = 0, spool_pending = 0, spool_bytes = 0,
      }, stats)
      if row.delivered then
        assert.same({}, errors)
        local arrived = {}
        for _, e in ipairs(c:events()) do
          if e.event == "fault" then arrived[#arrived + 1] = e.metadata end
        end
        assert.same({ metadata }, arrived)
        return
      end
      assert.equals(1, #errors)
      local err = errors[1]
      assert.equals(row.expired and "EXPIRED" or row.code, err.code)
      if row.expired then assert.matches(row.expired, err.message, 1, true) end
      assert.equals(row.status, err.status)
      assert.equals("fault", err.event)
      assert.equals(attempts, err.attempts)
      assert.is_string(err.message)
      assert.is_true(#err.message > 0)
      if row.unread_body then
        assert.equals(tostring(#err.body), list[1].headers.content_length)
        assert.same(metadata, helpers.decode(err.body).metadata)
      elseif #list > 0 then
        assert.equals(list[1].body, err.body)
      else
        local body = helpers.decode(err.body)
        assert.equals("fault", body.event)
        assert.same(metadata, body.metadata)
      end
      assert.equals(0, #c:events())
    end)
  end

  it("never reads or writes the file a redirect to file:// names", function()
    assert.equals(PLANTED, helpers.read_file(planted_path))
  end)

  it("sends nothing in the clear to a TLS endpoint it does not trust", function()
    local c = helpers.start_collector({ tls = true })
    finally(function() c:stop() end)
    local errors = {}
    local cl = dn.new(helpers.fast({
      endpoint = c.tls_url, max_retries = 3, timeout = within(2), connect_timeout = within(1),
      on_error = function(err) errors[#errors + 1] = err.code end,
    }))
    -- Closed whatever happens: a handshake that timed out (a loaded machine) waits for
    -- the network until max_age, and would hold up every later global flush.
    finally(function() cl:close() end)
    for i = 1, 3 do assert.is_true(cl:emit("untrusted", { i = i })) end
    assert.is_true(cl:flush(within(5)))
    assert.same({ "TLS_ERROR", "TLS_ERROR", "TLS_ERROR" }, errors)
    assert.equals(0, cl:stats().retries)
    -- Neither the TLS listener nor the plain one got a request.
    assert.same({}, c:request_lines())
    assert.is_nil(c:error_log_text():find("client sent plain HTTP request", 1, true))
  end)

  it("with insecure = true delivers to an untrusted certificate and warns once on stderr", function()
    local c = helpers.start_collector({ tls = true })
    finally(function() c:stop() end)
    local rc, out, err = helpers.run_lua([[
      local dn = require("dukanext")
      local url = ...
      local a = dn.new({ endpoint = url, insecure = true })
      local b = dn.new({ endpoint = url, insecure = true })
      assert(a:emit("insecure", { from = "a" }))
      assert(b:emit("insecure", { from = "b" }))
      print("flushed", dn.flush(10))
    ]], { c.tls_url })
    assert.equals(0, rc, err)
    assert.equals("flushed\ttrue\n", out)
    local warning = "dukanext: TLS verification is off (insecure = true): " .. c.tls_url .. "\n"
    local first = err:find(warning, 1, true)
    assert.truthy(first, "no warning on stderr: " .. err)
    assert.is_nil(err:find("TLS verification is off", first + #warning, true), "warned twice: " .. err)
    local records = c:requests()
    assert.same({ "https", "https" }, field(records, "scheme"))
    assert.same({ 200, 200 }, field(records, "status"))
  end)

  -- HTTP/2: over TLS (ALPN) and in the clear with prior knowledge (h2c). Both are
  -- sent several at once and then one after another, so that new streams go over a
  -- connection already used: libcurl 7.88 fails exactly that for h2c unless dukanext
  -- gives each attempt a connection of its own there.
  for _, case in ipairs({
    { name = "HTTP/2 over TLS", version = "2", opts = { tls = true, http2 = "tls" }, url = "tls_url" },
    { name = "h2c with prior knowledge", version = "2-prior-knowledge", opts = { http2 = true }, url = "url" },
  }) do
    it(case.name .. " delivers every event, in parallel and one after another", function()
      local c = helpers.start_collector(case.opts)
      finally(function() c:stop() end)
      local errors = {}
      local cl = dn.new(helpers.fast({
        endpoint = c[case.url], ca_file = c.ca_file, http_version = case.version, max_retries = 0,
        on_error = function(err) errors[#errors + 1] = err.code .. " " .. tostring(err.message) end,
      }))
      for i = 1, 20 do assert.is_true(cl:emit("h2", { i = i })) end
      assert.is_true(cl:flush(within(10)))
      for i = 21, 25 do
        assert.is_true(cl:emit("h2", { i = i }))
        assert.is_true(cl:flush(within(5)))
      end
      assert.same({}, errors)
      assert.equals(25, cl:stats().sent)
      local records = c:requests()
      assert.equals(25, #records)
      for _, r in ipairs(records) do
        assert.equals(2, r.http_version)
        assert.equals(200, r.status)
      end
    end)
  end
end)

-- README: flush(t) keeps its deadline even when a name lookup hangs. A ".invalid" name
-- answers NXDOMAIN at once, so the lookup here goes to a resolver that reads every
-- query and never answers: a UDP socket on 127.0.0.77:53, named by a private
-- resolv.conf bind-mounted over /etc/resolv.conf in a mount namespace of the process
-- under test (this libcurl resolves with getaddrinfo in a thread; it has no c-ares,
-- so CURLOPT_DNS_SERVERS is not available to point it elsewhere).
describe("a name lookup that never answers #timing", function()
  local socket = require("socket")
  local RESOLVER = "127.0.0.77"

  local CHILD = [==[
    local socket = require("socket")
    local dn = require("dukanext")
    local url, deadline = ...
    local errors = {}
    local cl = dn.new({ endpoint = url, timeout = 60, connect_timeout = 60, max_retries = 0,
      on_error = function(err) errors[#errors + 1] = err.code end })
    assert(cl:emit("lookup_hangs"))
    local t0 = socket.gettime()
    local ok, err, pending = cl:flush(tonumber(deadline))
    local waited = socket.gettime() - t0
    local t1 = socket.gettime()
    local undelivered = cl:close()
    io.write("ok=", tostring(ok), "\nerr=", tostring(err), "\npending=", tostring(pending),
      "\nwaited=", waited, "\nclosed_in=", socket.gettime() - t1, "\nundelivered=",
      tostring(undelivered), "\nerrors=", #errors, "\n")
  ]==]

  -- A shell command that runs `command` with resolv_conf over /etc/resolv.conf, in a
  -- mount namespace of its own; nil when this host allows none.
  local function with_resolv_conf(resolv_conf)
    local mount = "mount --bind " .. helpers.quote(resolv_conf) .. " /etc/resolv.conf"
    local probe = helpers.shell("unshare -m sh -c " .. helpers.quote(mount .. " && echo mounted") .. " 2>&1")
    if probe ~= "mounted" then return nil, probe end
    return function(command)
      return "unshare -m sh -c " .. helpers.quote(mount .. " && " .. command)
    end
  end

  it("flush(t) returns at its deadline, and close and exit do not wait for the lookup", function()
    local resolver, bind_err = socket.udp()
    assert(resolver, bind_err)
    finally(function() resolver:close() end)
    local ok, err = resolver:setsockname(RESOLVER, 53)
    if not ok then return pending("no silent resolver on " .. RESOLVER .. ":53: " .. tostring(err)) end
    local dir = helpers.tmpdir()
    finally(function() helpers.remove_tree(dir) end)
    local resolv_conf = dir .. "/resolv.conf"
    local f = assert(io.open(resolv_conf, "wb"))
    f:write("nameserver " .. RESOLVER .. "\noptions timeout:30 attempts:2\n")
    f:close()
    local wrap, why = with_resolv_conf(resolv_conf)
    if not wrap then return pending("no private resolv.conf here (unshare -m, mount --bind): " .. why) end

    local t0 = helpers.now()
    local rc, out, stderr = helpers.run_lua(CHILD,
      { "http://dukanext-lookup-hangs.example" .. API, "0.5" }, nil, wrap)
    local child_time = helpers.now() - t0
    assert.equals(0, rc, out .. stderr)
    local r = {}
    for k, v in out:gmatch("([%w_]+)=([^\n]*)\n") do r[k] = v end
    -- The lookup went to the silent resolver, which got the query and said nothing.
    resolver:settimeout(0)
    local query = resolver:receive()
    assert.is_string(query, "the resolver got no query")
    assert.equals("nil", r.ok, out)
    assert.equals("TIMEOUT", r.err)
    assert.equals("1", r.pending)
    local waited = tonumber(r.waited)
    assert(waited >= 0.45 and waited <= helpers.within(1.5), "flush(0.5) took " .. waited .. " s")
    assert.equals("1", r.undelivered)
    assert(tonumber(r.closed_in) <= helpers.within(0.5), "close took " .. r.closed_in .. " s")
    -- The lookup would hang for a minute: the process ended without waiting for it.
    assert(child_time <= helpers.within(5), "the process took " .. child_time .. " s to end")
  end)
end)
