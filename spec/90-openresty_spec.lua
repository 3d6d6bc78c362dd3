-- OpenResty: the helper module dukanext.ngx, then the example storefront
-- (examples/openresty/nginx.conf) in a real nginx with Debian's lua module, several
-- workers and the LuaJIT build, driven by curl with cookie jars, checked at the
-- collector. Needs the LuaJIT build (cmake -DDUKANEXT_ALL_LUAS=ON, or
-- DUKANEXT_LUAJIT_CPATH) and curl.
local helpers = require("spec.helpers")
local cjson = require("cjson")

if not package.path:find("./lua/?.lua", 1, true) then
  package.path = "./lua/?.lua;" .. package.path
end
local launch = require("examples.openresty.launch")

local LUAJIT_CPATH = helpers.luajit_cpath(launch.luajit_cpath())
local NO_LUAJIT = "needs the LuaJIT build of the module (cmake -DDUKANEXT_ALL_LUAS=ON with"
  .. " luajit2 installed, or DUKANEXT_LUAJIT_CPATH)"

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function url_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local function escape_pattern(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- The attributes every cookie of the example carries (its defaults).
local ATTRIBUTES = "; Path=/; Max-Age=63072000; Secure; HttpOnly; SameSite=Lax"

describe("dukanext.ngx outside nginx (a stand-in ngx, the real module)", function()
  local dn = helpers.dn()
  local c
  local saved_ngx

  -- Enough of lua-nginx-module's API for the helper, with one request's state.
  local function fake_ngx(request)
    request = request or {}
    local fake = {
      WARN = 5, ERR = 4,
      var = request.var or {},
      ctx = {},
      header = {},
      logs = {},
      timers = {},
      exiting = false,
    }
    function fake.log(level, ...)
      local parts = {}
      for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
      fake.logs[#fake.logs + 1] = { level = level, text = table.concat(parts) }
    end
    function fake.escape_uri(s)
      return (s:gsub("[^%w%-%._~]", function(ch) return ("%%%02X"):format(ch:byte()) end))
    end
    function fake.unescape_uri(s)
      return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
    end
    fake.timer = {
      every = function(interval, fn)
        fake.timers[#fake.timers + 1] = { every = interval, fn = fn }
        return true
      end,
      at = function(delay, fn)
        fake.timers[#fake.timers + 1] = { at = delay, fn = fn }
        return true
      end,
    }
    fake.sleep = helpers.sleep
    fake.worker = {
      exiting = function() return fake.exiting end,
      pid = function() return 4242 end,
    }
    return fake
  end

  -- A fresh copy of the helper bound to a stand-in ngx.
  local function load_helper(fake)
    _G.ngx = fake
    package.loaded["dukanext.ngx"] = nil
    return require("dukanext.ngx")
  end

  local function set_cookies(fake)
    local h = fake.header["Set-Cookie"]
    if type(h) == "string" then return { h } end
    return h or {}
  end

  setup(function()
    saved_ngx = _G.ngx
    c = helpers.start_collector()
  end)

  teardown(function()
    _G.ngx = saved_ngx
    package.loaded["dukanext.ngx"] = nil
    dn.configure({})
    if c then c:stop() end
  end)

  before_each(function()
    c:reset()
  end)

  it("renders the default cookie attributes and escapes the value", function()
    local fake = fake_ngx()
    local dnx = load_helper(fake)
    local s = dnx.cookie_storage()
    s.set("dn_session_id", '{"id":"S x;y","expires":1}')
    assert.same({ "dn_session_id=%7B%22id%22%3A%22S%20x%3By%22%2C%22expires%22%3A1%7D" .. ATTRIBUTES },
      set_cookies(fake))
  end)

  it("renders the cookie options it is given", function()
    local fake = fake_ngx()
    local dnx = load_helper(fake)
    dnx.cookie_storage({ path = "/shop", domain = "example.com", max_age = 600, secure = false,
      http_only = false, same_site = "strict" }).set("a", "1")
    dnx.cookie_storage({ max_age = false, same_site = false }).set("b", "2")
    dnx.cookie_storage({ same_site = "None" }).set("c", "3")
    assert.same({
      "a=1; Path=/shop; Domain=example.com; Max-Age=600; SameSite=Strict",
      "b=2; Path=/; Secure; HttpOnly",
      "c=3; Path=/; Max-Age=63072000; Secure; HttpOnly; SameSite=None",
    }, set_cookies(fake))
  end)

  it("raises for a bad cookie option, naming it", function()
    local dnx = load_helper(fake_ngx())
    local bad = {
      { { colour = "red" }, "unknown cookie option colour" },
      { { same_site = "sometimes" }, "same_site" },
      { { path = "/a;b" }, "path" },
      { { domain = "x\r\ny" }, "domain" },
      { { max_age = -1 }, "max_age" },
      { { max_age = 1.5 }, "max_age" },
    }
    for _, case in ipairs(bad) do
      local ok, err = pcall(dnx.cookie_storage, case[1])
      assert.is_false(ok)
      assert.matches(case[2], err, 1, true)
    end
    assert.has_error(function() dnx.set_cookie_options({ secure = true, bogus = 1 }) end)
  end)

  it("replaces a Set-Cookie of the same name and keeps the other ones", function()
    local fake = fake_ngx()
    fake.header["Set-Cookie"] = "cart=3; Path=/"
    local dnx = load_helper(fake)
    local s = dnx.cookie_storage({ secure = false })
    s.set("dn_session_id", "one")
    s.set("dn_user_id", "u")
    dnx.cookie_storage({ secure = false }).set("dn_session_id", "two")
    local attrs = "; Path=/; Max-Age=63072000; HttpOnly; SameSite=Lax"
    assert.same({ "cart=3; Path=/", "dn_user_id=u" .. attrs, "dn_session_id=two" .. attrs },
      set_cookies(fake))
  end)

  it("reads the request's cookie unescaped, else what this request set", function()
    local fake = fake_ngx({ var = {
      cookie_dn_user_id = "abc%2Ddef",
      cookie_dn_session_id = '"%7B%7D"',
      cookie_empty = "",
    } })
    local dnx = load_helper(fake)
    local s = dnx.cookie_storage()
    assert.equals("abc-def", s.get("dn_user_id"))
    assert.equals("{}", s.get("dn_session_id"))  -- a quoted cookie value
    assert.is_nil(s.get("empty"))
    assert.is_nil(s.get("missing"))
    s.set("dn_session_id", "new value")
    -- Another storage of the same request sees it too (kept in ngx.ctx).
    assert.equals("new value", dnx.cookie_storage().get("dn_session_id"))
  end)

  it("emits with the visitor's cookies, User-Agent, address and referrer", function()
    local long_ua = "Mozilla/5.0 " .. ("x"):rep(3000)
    local fake = fake_ngx({ var = {
      http_user_agent = long_ua,
      remote_addr = "203.0.113.7",
      http_referer = "https://search.example/?q=shoes",
      cookie_dn_user_id = "0bc41c04-4eed-4aae-a318-4f9ab9b6f338-1759904642100",
    } })
    local dnx = load_helper(fake)
    dnx.init_worker({ endpoint = c.url, pump_interval = 0.01 })
    assert(dnx.emit("page_view", { url = "/shoes" }))
    assert(helpers.pump_until(function() return #c:requests() >= 1 end, 5))
    local rec = c:requests()[1]
    local body = cjson.decode(rec.body)
    assert.equals("0bc41c04-4eed-4aae-a318-4f9ab9b6f338-1759904642100", body.userId)
    assert.equals("https://search.example/?q=shoes", body.referrerUrl)
    assert.equals("/shoes", body.sessionStartPage)
    assert.equals(long_ua:sub(1, 2048), rec.headers.user_agent)
    assert.equals("203.0.113.7", rec.headers.x_forwarded_for)
    -- The user id was kept, so only the session record is written.
    local cookies = set_cookies(fake)
    assert.equals(1, #cookies)
    local value = cookies[1]:match("^dn_session_id=([^;]*)" .. escape_pattern(ATTRIBUTES) .. "$")
    assert.equals(body.sessionId, cjson.decode(url_decode(value)).id)
  end)

  it("leaves clientIp out when the client address is not an IP (unix socket)", function()
    local fake = fake_ngx({ var = { remote_addr = "unix:", http_user_agent = "Mozilla/5.0" } })
    local dnx = load_helper(fake)
    dnx.init_worker({ endpoint = c.url })
    assert(dnx.emit("page_view", { url = "/" }))
    assert(helpers.pump_until(function() return #c:requests() >= 1 end, 5))
    assert.is_nil(c:requests()[1].headers.x_forwarded_for)
  end)

  it("starts one pump timer, flushes when it runs prematurely, then flushes late events", function()
    local fake = fake_ngx({ var = { remote_addr = "127.0.0.1" } })
    local dnx = load_helper(fake)
    dnx.init_worker({ endpoint = c.url, pump_interval = 0.2, flush_timeout = 5 })
    dnx.init_worker({ endpoint = c.url, pump_interval = 0.2, flush_timeout = 5 })
    assert.equals(1, #fake.timers)
    assert.equals(0.2, fake.timers[1].every)
    local tick = fake.timers[1].fn

    -- A normal tick pumps without waiting.
    assert(dnx.emit("page_view", { url = "/1" }))
    tick(false)
    assert(c:wait_events(1, 5))

    -- The worker exits: events still queued are delivered before the tick returns.
    c:plan(nil, { delay = 0.2 })
    for i = 1, 3 do assert(dnx.emit("page_view", { url = "/q" .. i })) end
    tick(true)
    assert.equals(0, dn.stats().queued + dn.stats().in_flight)
    assert.equals(4, #c:events())

    -- A request still served by the draining worker: one zero-delay timer flushes.
    fake.exiting = true
    assert(dnx.emit("page_view", { url = "/late1" }))
    assert(dnx.emit("page_view", { url = "/late2" }))
    assert.equals(2, #fake.timers)
    assert.equals(0, fake.timers[2].at)
    fake.timers[2].fn(false)
    assert.equals(6, #c:events())
  end)

  it("logs failures at WARN unless given an on_error, and checks its own options", function()
    local fake = fake_ngx({ var = { remote_addr = "127.0.0.1" } })
    local dnx = load_helper(fake)
    c:plan(nil, { status = 400, code = "INVALID_EVENT" })
    dnx.init_worker({ endpoint = c.url })
    assert(dnx.emit("page_view", { url = "/" }))
    helpers.pump_until(function() return #fake.logs > 0 end, 5)
    assert.equals(fake.WARN, fake.logs[1].level)
    assert.matches("dukanext: page_view failed: INVALID_EVENT", fake.logs[1].text, 1, true)

    local ok, err = pcall(dnx.init_worker, { endpoint = c.url, pump_interval = 0 })
    assert.is_false(ok)
    assert.matches("dukanext.ngx: pump_interval must be a number of seconds > 0", err, 1, true)
    assert.has_error(function() dnx.init_worker({ endpoint = c.url, flush_timeout = "soon" }) end)
    -- Options the helper does not know reach dn.configure, which refuses them.
    assert.has_error(function() dnx.init_worker({ endpoint = c.url, bogus = 1 }) end)
  end)
end)

describe("the OpenResty storefront example (nginx, 2 workers, LuaJIT build)", function()
  if not LUAJIT_CPATH then
    pending(NO_LUAJIT)
    return
  end
  -- nginx always hosts the LuaJIT build, whatever runs busted: one run is enough.
  -- ctest runs it with busted-luajit; DUKANEXT_OPENRESTY=1 runs it anywhere.
  if not jit and os.getenv("DUKANEXT_OPENRESTY") ~= "1" then
    pending("runs with the LuaJIT suite (or DUKANEXT_OPENRESTY=1)")
    return
  end
  local collector, shop, tmp
  local SESSION_TIMEOUT = 2
  local jar_count = 0

  -- One curl request with a cookie jar. Answers the status and the Set-Cookie
  -- values of the answer.
  local function get(jar, path, opts)
    opts = opts or {}
    jar_count = jar_count + 1
    local headers_file = tmp .. "/headers-" .. jar_count
    local cmd = "curl -s -o /dev/null -D " .. quote(headers_file) .. " -w '%{http_code}'"
      .. " -b " .. quote(jar) .. " -c " .. quote(jar)
      .. " -A " .. quote(opts.user_agent or "Mozilla/5.0 (spec)")
      .. (opts.referer and (" -e " .. quote(opts.referer)) or "")
      .. " " .. quote(shop:url(path))
    local _, out = launch.run(cmd)
    local cookies = {}
    for line in (helpers.read_file(headers_file) or ""):gmatch("[^\r\n]+") do
      local value = line:match("^[Ss]et%-[Cc]ookie: (.*)$")
      if value then cookies[#cookies + 1] = value end
    end
    return tonumber(out:match("(%d%d%d)%s*$")), cookies
  end

  local function jar(name)
    return tmp .. "/jar-" .. name
  end

  -- Events at the collector with the worker that sent them (a header the
  -- storefront's client adds).
  local function events_with_workers(c)
    local list = {}
    for _, rec in ipairs(c:requests()) do
      if rec.action == "accepted" or rec.outcome == "accepted" then
        local e = cjson.decode(rec.body)
        e.worker = rec.all_headers and rec.all_headers["x-storefront-worker"]
        e.user_agent = rec.headers.user_agent
        list[#list + 1] = e
      end
    end
    return list
  end

  setup(function()
    tmp = helpers.tmpdir()
    collector = helpers.start_collector({ workers = 2 })
    shop = launch.start({ endpoint = collector.url, workers = 2, session_timeout = SESSION_TIMEOUT,
      cpath = LUAJIT_CPATH })
  end)

  teardown(function()
    if shop then shop:stop() end
    if collector then collector:stop() end
    if tmp then helpers.remove_tree(tmp) end
  end)

  before_each(function()
    collector:reset()
  end)

  it("loads the module in the master (init_by_lua) and uses it in each worker", function()
    local master = shop:master_pid()
    local workers = {}
    -- Each LuaSocket request is a new connection; reuseport spreads them.
    for _ = 1, 100 do
      local info = assert(shop:info())
      -- nginx runs init_by_lua before it daemonizes: the process that loaded the
      -- module is the master or, on the first start, the one that forked it.
      assert.is_true(info.loaded_by_pid == master or not launch.alive(info.loaded_by_pid))
      assert.is_true(info.same_module)
      assert.are_not.equal(master, info.worker_pid)
      workers[info.worker_pid] = true
      if count_keys(workers) >= 2 then break end
    end
    assert.equals(2, count_keys(workers))
    local listed = set_of(shop:worker_pids())
    for pid in pairs(workers) do assert.is_true(listed[pid]) end
  end)

  it("sets the id cookies with the asked attributes, the user id once", function()
    local j = jar("attributes")
    local started_ms = helpers.now_ms()
    local status, cookies = get(j, "/attributes/first")
    assert.equals(200, status)
    assert.equals(2, #cookies)
    local attrs = escape_pattern(ATTRIBUTES) .. "$"
    local user_id, session_value
    for _, line in ipairs(cookies) do
      user_id = user_id or line:match("^dn_user_id=([^;]*)" .. attrs)
      session_value = session_value or line:match("^dn_session_id=([^;]*)" .. attrs)
    end
    assert.matches(helpers.USER_ID, user_id)
    -- Escaped: nothing in the value that a cookie may not hold.
    assert.is_nil(session_value:find('[%s",;{}\\]'))
    local record = cjson.decode(url_decode(session_value))
    assert.matches(helpers.SESSION_ID, record.id)
    assert.equals("/attributes/first", record.startPage)
    assert.is_true(record.expires >= started_ms + SESSION_TIMEOUT * 1000 - 50)
    assert.is_true(record.expires <= helpers.now_ms() + SESSION_TIMEOUT * 1000 + 50)

    -- A returning visitor: the session record is rewritten (its expiry slides),
    -- the user id is not.
    status, cookies = get(j, "/attributes/second")
    assert.equals(200, status)
    assert.equals(1, #cookies)
    local again = cjson.decode(url_decode(assert(cookies[1]:match("^dn_session_id=([^;]*)" .. attrs))))
    assert.equals(record.id, again.id)
    assert.equals("/attributes/first", again.startPage)
    local events = collector:wait_events(2, 5)
    assert.equals(2, #events)
    for _, e in ipairs(events) do assert.equals(user_id, e.userId) end
  end)

  it("keeps one userId and session per cookie jar, with its first page as sessionStartPage", function()
    local names = { "ana", "ben", "cho" }
    local expected = 0
    -- Interleaved, as concurrent visitors would be.
    for step = 1, 4 do
      for _, name in ipairs(names) do
        local path = ("/%s/page-%d"):format(name, step)
        local status = get(jar(name), path, { user_agent = "Mozilla/5.0 (" .. name .. ")",
          referer = step > 1 and shop:url(("/%s/page-%d"):format(name, step - 1)) or nil })
        assert.equals(200, status)
        expected = expected + 1
      end
    end
    for _, name in ipairs(names) do
      assert.equals(200, (get(jar(name), "/api/cart?product=sku-" .. name .. "&quantity=2",
        { user_agent = "Mozilla/5.0 (" .. name .. ")" })))
      expected = expected + 1
    end
    assert.equals(expected, #collector:wait_events(expected, 10))
    local events = events_with_workers(collector)
    assert.equals(expected, #events)

    local by_jar, user_ids, workers = {}, {}, {}
    for _, e in ipairs(events) do
      local name = e.event == "add_to_cart" and e.metadata.productId:match("^sku%-(%a+)$")
        or e.metadata.url:match("^/(%a+)/")
      by_jar[name] = by_jar[name] or {}
      table.insert(by_jar[name], e)
      workers[e.worker] = true
    end
    for _, name in ipairs(names) do
      local list = by_jar[name]
      assert.equals(5, #list)
      local first = list[1]
      assert.matches(helpers.USER_ID, first.userId)
      assert.matches(helpers.SESSION_ID, first.sessionId)
      user_ids[first.userId] = true
      local carts = 0
      for _, e in ipairs(list) do
        assert.equals(first.userId, e.userId)
        assert.equals(first.sessionId, e.sessionId)
        assert.equals("/" .. name .. "/page-1", e.sessionStartPage)
        assert.equals("Mozilla/5.0 (" .. name .. ")", e.user_agent)
        assert.is_false(e.hasCustomerAccount)
        if e.event == "add_to_cart" then
          carts = carts + 1
          assert.equals(2, e.metadata.quantity)
        else
          local step = tonumber(e.metadata.url:match("(%d+)$"))
          if step > 1 then
            assert.equals(shop:url(("/%s/page-%d"):format(name, step - 1)), e.referrerUrl)
          else
            assert.equals(cjson.null, e.referrerUrl)
          end
        end
      end
      assert.equals(1, carts)
    end
    assert.equals(3, count_keys(user_ids))
    -- Each curl run is a new connection: with reuseport both workers served some.
    assert.is_true(count_keys(workers) >= 2, "events came from one worker only")
  end)

  it("starts a new session after session_timeout idle, keeping the user id", function()
    local j = jar("rotation")
    assert.equals(200, (get(j, "/rotation/a")))
    assert.equals(200, (get(j, "/rotation/b")))
    helpers.sleep(SESSION_TIMEOUT + 0.5)
    assert.equals(200, (get(j, "/rotation/c")))
    assert.equals(200, (get(j, "/rotation/d")))
    local events = collector:wait_events(4, 5)
    assert.equals(4, #events)
    local by_url = {}
    for _, e in ipairs(events) do by_url[e.metadata.url] = e end
    local a, b, cc, d = by_url["/rotation/a"], by_url["/rotation/b"], by_url["/rotation/c"], by_url["/rotation/d"]
    assert.equals(a.sessionId, b.sessionId)
    assert.are_not.equal(a.sessionId, cc.sessionId)
    assert.equals(cc.sessionId, d.sessionId)
    for _, e in ipairs({ b, cc, d }) do assert.equals(a.userId, e.userId) end
    assert.equals("/rotation/a", b.sessionStartPage)
    assert.equals("/rotation/c", cc.sessionStartPage)
    assert.equals("/rotation/c", d.sessionStartPage)
  end)

  it("keeps a session alive while the visitor keeps coming (the cookie slides)", function()
    local j = jar("sliding")
    for i = 1, 4 do
      assert.equals(200, (get(j, "/sliding/" .. i)))
      if i < 4 then helpers.sleep(SESSION_TIMEOUT * 0.6) end
    end
    local events = collector:wait_events(4, 5)
    assert.equals(4, #events)
    for _, e in ipairs(events) do
      assert.equals(events[1].sessionId, e.sessionId)
      assert.equals("/sliding/1", e.sessionStartPage)
    end
  end)
end)

describe("the storefront across nginx -s reload and -s quit", function()
  if not LUAJIT_CPATH then
    pending(NO_LUAJIT)
    return
  end
  local collector, shop, tmp

  before_each(function()
    tmp = helpers.tmpdir()
    collector = helpers.start_collector({ workers = 2 })
    shop = launch.start({ endpoint = collector.url, workers = 2, cpath = LUAJIT_CPATH })
  end)

  after_each(function()
    if shop then shop:stop() end
    if collector then collector:stop() end
    if tmp then helpers.remove_tree(tmp) end
  end)

  -- Request ids of the requests the storefront answered 200 on analytics
  -- locations (its access log), and the events at the collector by request id.
  local function answered_and_received()
    local answered = {}
    for _, r in ipairs(shop:access_log()) do
      if r.status == 200 and not r.uri:find("^/_storefront/") then answered[#answered + 1] = r.id end
    end
    local received, workers = {}, {}
    for _, rec in ipairs(collector:requests()) do
      if rec.action == "accepted" or rec.outcome == "accepted" then
        local e = cjson.decode(rec.body)
        local id = e.metadata.requestId
        received[id] = (received[id] or 0) + 1
        workers[rec.all_headers["x-storefront-worker"]] = true
      end
    end
    return answered, received, workers
  end

  local function assert_one_event_per_answer(answered, received)
    local missing, doubled = {}, {}
    for _, id in ipairs(answered) do
      if not received[id] then missing[#missing + 1] = id
      elseif received[id] > 1 then doubled[#doubled + 1] = id end
    end
    local answered_set = set_of(answered)
    local unknown = {}
    for id in pairs(received) do
      if not answered_set[id] then unknown[#unknown + 1] = id end
    end
    assert.same({ missing = {}, doubled = {}, unknown = {} },
      { missing = missing, doubled = doubled, unknown = unknown })
  end

  local function assert_clean_error_log()
    local problems = {}
    for line in shop:error_log_text():gmatch("[^\n]+") do
      if line:find("%[alert%]") or line:find("%[crit%]") or line:find("%[emerg%]")
        or line:find("%[error%]") or line:find("dukanext") or line:find("analytics") then
        problems[#problems + 1] = line
      end
    end
    assert.same({}, problems)
  end

  it("delivers exactly one event per answered request across two reloads and a quit", function()
    -- Every event waits a little at the collector, so some are in flight at each
    -- reload and at the quit.
    collector:plan(nil, { delay = 0.02 })
    local streams, pages, carts = 4, 210, 30
    local per_stream = pages + carts
    local outputs = {}
    for i = 1, streams do
      outputs[i] = tmp .. "/stream-" .. i
      local j = tmp .. "/stream-jar-" .. i
      -- One curl per stream: keep-alive, a cookie jar, about 80 requests a second.
      os.execute(("curl -s --rate 80/s --max-time 5 -b %s -c %s -A 'Mozilla/5.0 (stream %d)'"
        .. " -w '%%{http_code}\\n' -o /dev/null %s -o /dev/null %s > %s 2>&1 &"):format(
        quote(j), quote(j), i,
        quote(shop:url(("/reload/s%d-[1-%d]"):format(i, pages))),
        quote(shop:url(("/api/cart?product=s%d-[1-%d]"):format(i, carts))),
        quote(outputs[i])))
    end
    helpers.sleep(0.8)
    local old = shop:reload()
    -- A reload runs init_by_lua again, in the master itself (old workers may
    -- still answer for a moment).
    local info = launch.wait_until(5, function()
      local i = shop:info()
      return i and not old[i.worker_pid] and i
    end)
    assert.equals(shop:master_pid(), info.loaded_by_pid)
    assert.is_true(info.same_module)
    helpers.sleep(0.8)
    shop:reload()
    -- Until every stream has made all its requests.
    local client_ok = 0
    assert(launch.wait_until(20, function()
      local done, ok = 0, 0
      for i = 1, streams do
        local text = helpers.read_file(outputs[i]) or ""
        local lines = select(2, text:gsub("\n", ""))
        if lines >= per_stream then done = done + 1 end
        ok = ok + select(2, text:gsub("200\n", ""))
      end
      client_ok = ok
      return done == streams
    end), "the request streams did not finish")
    assert.is_true(shop:quit(20), "nginx did not exit after -s quit")

    local answered, received, workers = answered_and_received()
    -- Nearly all requests were answered; curl saw no 200 nginx did not log.
    assert.is_true(client_ok >= streams * per_stream * 0.95,
      ("only %d of %d requests answered 200"):format(client_ok, streams * per_stream))
    assert.is_true(#answered >= client_ok)
    assert_one_event_per_answer(answered, received)
    -- Workers of at least two generations (two each) sent events.
    assert.is_true(count_keys(workers) >= 3, "events from " .. count_keys(workers) .. " workers")
    assert_clean_error_log()
  end)

  it("waits on nginx -s quit for the events still queued or in flight", function()
    collector:plan(nil, { delay = 0.5 })
    for i = 1, 12 do
      local status = launch.get(shop:url("/quit/" .. i), { ["User-Agent"] = "Mozilla/5.0 (quit)" })
      assert.equals(200, status)
    end
    local t0 = helpers.now()
    assert.is_true(shop:quit(20), "nginx did not exit after -s quit")
    -- The workers waited for the slow collector rather than dropping the events.
    assert.is_true(helpers.now() - t0 >= 0.3)
    local answered, received = answered_and_received()
    assert.equals(12, #answered)
    assert_one_event_per_answer(answered, received)
    assert_clean_error_log()
  end)

  it("delivers on nginx -s stop too, through exit_worker_by_lua, if the collector is quick", function()
    collector:plan(nil, { delay = 0.1 })
    for i = 1, 8 do
      assert.equals(200, (launch.get(shop:url("/stop/" .. i), { ["User-Agent"] = "Mozilla/5.0 (stop)" })))
    end
    assert.is_true(shop:fast_stop(20), "nginx did not exit after -s stop")
    local answered, received = answered_and_received()
    assert.equals(8, #answered)
    assert_one_event_per_answer(answered, received)
    assert_clean_error_log()
  end)
end)
