-- OpenResty, page by page: README's own snippet (README.md, "On OpenResty") in a
-- real nginx worker with the LuaJIT build, driven by curl with cookie jars and
-- checked at the collector: one event per page the browser asked for across
-- internal redirects, the visitor's cookies beside the app's, identity per request,
-- and what README says about clientIp and Secure cookies.
local helpers = require("spec.helpers")
local openresty = require("spec.support.openresty")
local cjson = require("cjson")

if not openresty.runs_here() then return end

local PAGES = {
  ["index.html"] = "<h1>home</h1>",
  ["landing.html"] = "<h1>landing</h1>",
  ["404.html"] = "<h1>not found</h1>",
}

-- The locations of a shop around README's `location /`, each showing a page with
-- README's own page_view block.
local function shop_locations(page_view)
  return ([[
    index index.html;
    error_page 404 /404.html;
    location /spa/ {
      PAGE_VIEW
      try_files $uri /index.html;
    }
    location /go/ {
      PAGE_VIEW
      content_by_lua_block { return ngx.exec("/landing.html") }
    }
    location /app/ {
      PAGE_VIEW
      content_by_lua_block {
        ngx.header["Set-Cookie"] = "app_session=s1; Path=/"
        ngx.say("app")
      }
    }
    location /app-append/ {
      PAGE_VIEW
      content_by_lua_block {
        local lines = ngx.header["Set-Cookie"]
        if type(lines) == "string" then lines = { lines } end
        lines = lines or {}
        lines[#lines + 1] = "app_pref=dark; Path=/"
        ngx.header["Set-Cookie"] = lines
        ngx.say("app")
      }
    }
    location /checkout/ {
      PAGE_VIEW
      content_by_lua_block {
        local dnx = require("dukanext.ngx")
        dnx.identify(ngx.var.arg_customer)
        local ok, err = dnx.emit("checkout_start", { url = ngx.var.uri })
        ngx.say(ok and "ok" or err)
      }
    }
    location /legacy-login/ {
      content_by_lua_block {
        require("dukanext").identify(ngx.var.arg_customer)
        ngx.say("ok")
      }
    }
]]):gsub("PAGE_VIEW", function() return page_view end)
end

local function urls(events)
  local list = {}
  for i, e in ipairs(events) do list[i] = e.metadata.url end
  table.sort(list)
  return list
end

-- The ids a visitor's Set-Cookie lines give it.
local function cookie_ids(cookies)
  local user_id, user_lines = openresty.cookie(cookies, "dn_user_id")
  local session_value, session_lines = openresty.cookie(cookies, "dn_session_id")
  local session = session_value and cjson.decode(openresty.url_decode(session_value))
  return { user = user_id, session = session and session.id, user_lines = user_lines,
    session_lines = session_lines }
end

describe("dukanext.ngx loaded outside nginx", function()
  it("leaves the client-wide dn.identify working (no ngx to warn through)", function()
    local dn = helpers.dn()
    local saved_ngx = _G.ngx
    _G.ngx = nil
    package.loaded["dukanext.ngx"] = nil
    local ok, err = pcall(function()
      require("dukanext.ngx")
      dn.identify("c-outside")
    end)
    _G.ngx = saved_ngx
    package.loaded["dukanext.ngx"] = nil
    dn.reset()
    assert(ok, err)
  end)
end)

describe("README's OpenResty snippet across internal redirects, app cookies and logins", function()
  local collector, shop, tmp

  local function jar(name)
    return tmp .. "/jar-" .. name
  end

  setup(function()
    tmp = helpers.tmpdir()
    collector = helpers.start_collector()
    local snippet = openresty.readme_snippet()
    shop = openresty.start({ endpoint = collector.url, files = PAGES,
      server = shop_locations(openresty.page_view_block(snippet)) })
  end)

  teardown(function()
    if shop then shop:stop() end
    if collector then collector:stop() end
    if tmp then helpers.remove_tree(tmp) end
  end)

  before_each(function()
    collector:reset()
  end)

  it("sends one page_view for GET / (index), with the ids the new visitor's cookies keep", function()
    local j = jar("index")
    local answer = openresty.get(shop, j, "/")
    assert.equals(200, answer.status)
    assert.matches("home", answer.body)
    local events = openresty.settled_events(collector, 1)
    assert.same({ "/" }, urls(events))
    local ids = cookie_ids(answer.cookies)
    assert.same({ user = events[1].userId, session = events[1].sessionId, user_lines = 1,
      session_lines = 1 }, ids)
    -- The helper's state header stays inside nginx.
    assert.is_nil(answer.headers["x-dukanext-state"])

    -- The next page of the same browser is the same visitor in the same session.
    collector:reset()
    assert.equals(200, openresty.get(shop, j, "/landing.html").status)
    events = openresty.settled_events(collector, 1)
    assert.same({ "/landing.html" }, urls(events))
    assert.equals(ids.user, events[1].userId)
    assert.equals(ids.session, events[1].sessionId)
  end)

  it("sends one page_view per page through try_files, error_page and ngx.exec", function()
    local cases = {
      { path = "/spa/deep/link", status = 200, body = "home" },
      { path = "/missing", status = 404, body = "not found" },
      { path = "/go/", status = 200, body = "landing" },
    }
    for i, case in ipairs(cases) do
      collector:reset()
      local answer = openresty.get(shop, jar("redirect-" .. i), case.path)
      assert.equals(case.status, answer.status)
      assert.matches(case.body, answer.body)
      local events = openresty.settled_events(collector, 1)
      assert.same({ case.path }, urls(events))
      local ids = cookie_ids(answer.cookies)
      assert.equals(events[1].userId, ids.user)
      assert.equals(events[1].sessionId, ids.session)
      assert.equals(1, ids.user_lines)
      assert.is_nil(answer.headers["x-dukanext-state"])
    end
  end)

  it("keeps the visitor's cookies beside the ones the app sets or appends after emit", function()
    local j = jar("app")
    local answer = openresty.get(shop, j, "/app/")
    assert.equals(200, answer.status)
    assert.same({ "s1", 1 }, { openresty.cookie(answer.cookies, "app_session") })
    local ids = cookie_ids(answer.cookies)
    assert.matches(helpers.USER_ID, ids.user)
    assert.equals(1, ids.user_lines)
    assert.equals(1, ids.session_lines)
    local first = openresty.settled_events(collector, 1)[1]
    assert.equals(ids.user, first.userId)

    -- The browser kept them: its next visit is the same visitor.
    collector:reset()
    assert.equals(200, openresty.get(shop, j, "/app/").status)
    local again = openresty.settled_events(collector, 1)
    assert.equals(1, #again)
    assert.equals(first.userId, again[1].userId)
    assert.equals(first.sessionId, again[1].sessionId)

    collector:reset()
    answer = openresty.get(shop, jar("append"), "/app-append/")
    assert.equals(200, answer.status)
    assert.same({ "dark", 1 }, { openresty.cookie(answer.cookies, "app_pref") })
    ids = cookie_ids(answer.cookies)
    assert.equals(1, ids.user_lines)
    assert.equals(1, ids.session_lines)
    assert.equals(ids.user, openresty.settled_events(collector, 1)[1].userId)
  end)

  it("names the customer dnx.identify gives on that request's events only", function()
    local a, b = jar("customer-a"), jar("customer-b")
    assert.equals("ok\n", openresty.get(shop, a, "/checkout/?customer=c-17").body)
    assert.equals("ok\n", openresty.get(shop, b, "/checkout/").body)
    local events = openresty.settled_events(collector, 4)
    assert.equals(4, #events)
    local by_user = {}
    for _, e in ipairs(events) do
      by_user[e.userId] = by_user[e.userId] or {}
      by_user[e.userId][e.event] = e
    end
    local a_events, b_events
    for _, list in pairs(by_user) do
      if list.checkout_start.customersId == "c-17" then a_events = list else b_events = list end
    end
    assert.is_table(a_events, "no checkout_start named c-17")
    assert.is_true(a_events.checkout_start.hasCustomerAccount)
    -- The page_view went out before the app identified the customer.
    assert.is_false(a_events.page_view.hasCustomerAccount)
    assert.equals(cjson.null, a_events.page_view.customersId)
    for _, e in pairs(b_events) do
      assert.is_false(e.hasCustomerAccount)
      assert.equals(cjson.null, e.customersId)
    end

    -- Per request: the customer's next request names nobody until the app says so.
    collector:reset()
    assert.equals(200, openresty.get(shop, a, "/landing.html").status)
    local later = openresty.settled_events(collector, 1)
    assert.equals(cjson.null, later[1].customersId)
  end)

  it("warns once per worker about dn.identify in a request, and dnx.emit does not use it", function()
    for _ = 1, 3 do
      assert.equals("ok\n", openresty.get(shop, nil, "/legacy-login/?customer=c-99").body)
    end
    assert.equals(200, openresty.get(shop, jar("after-legacy"), "/landing.html").status)
    local events = openresty.settled_events(collector, 1)
    assert.equals(1, #events)
    assert.is_false(events[1].hasCustomerAccount)
    assert.equals(cjson.null, events[1].customersId)
    local warnings = {}
    for line in shop:error_log_text():gmatch("[^\n]+") do
      if line:find("dn.identify() called while serving a request", 1, true) then
        warnings[#warnings + 1] = line
      end
    end
    assert.equals(1, #warnings) -- one worker
    assert.matches("every visitor", warnings[1], 1, true)
    assert.matches('require("dukanext.ngx").identify(id)', warnings[1], 1, true)
  end)

  it("sends the address that connected as clientIp, not the request's X-Forwarded-For", function()
    local answer = openresty.get(shop, jar("forwarded"), "/landing.html",
      { headers = { "X-Forwarded-For: 203.0.113.9" } })
    assert.equals(200, answer.status)
    local rec = collector:wait_requests(1, helpers.within(10))[1]
    assert.equals("127.0.0.1", rec.headers.x_forwarded_for)
    -- Secure by default.
    local user_line
    for _, line in ipairs(answer.cookies) do
      if line:find("^dn_user_id=") then user_line = line end
    end
    assert.matches("; Secure", user_line, 1, true)
  end)
end)

describe("README's real_ip and plain-http cookie advice, as README writes it", function()
  local collector, shop, tmp

  setup(function()
    tmp = helpers.tmpdir()
    collector = helpers.start_collector()
    local section = assert(helpers.read_file("README.md"):match("\n### On OpenResty\n(.-)\n##"))
    -- README's real_ip lines, trusting the spec's loopback as the load balancer.
    local real_ip = assert(section:match("```nginx\n([^`]-set_real_ip_from[^`]-)```"),
      "README shows no real_ip configuration")
    real_ip = real_ip:gsub("set_real_ip_from%s+[^;]+;", "set_real_ip_from 127.0.0.1;")
    shop = openresty.start({ endpoint = collector.url, files = PAGES, http = real_ip,
      -- README's commented line for a plain-http staging host, uncommented.
      edit = function(snippet)
        local out, n = snippet:gsub("%-%-%s*(dnx%.set_cookie_options%(%{ secure = false %}%))", "%1")
        assert(n == 1, "README's snippet has no commented set_cookie_options({ secure = false })")
        return out
      end })
  end)

  teardown(function()
    if shop then shop:stop() end
    if collector then collector:stop() end
    if tmp then helpers.remove_tree(tmp) end
  end)

  it("says clientIp is ngx.var.remote_addr, and real_ip makes it the forwarded client", function()
    local section = helpers.read_file("README.md"):match("\n### On OpenResty\n(.-)\n##")
    assert.matches("`clientIp`%s+%(`ngx%.var%.remote_addr`", section)
    local answer = openresty.get(shop, tmp .. "/jar-real-ip", "/",
      { headers = { "X-Forwarded-For: 198.51.100.4, 203.0.113.9" } })
    assert.equals(200, answer.status)
    local rec = collector:wait_requests(1, helpers.within(10))[1]
    assert.equals("203.0.113.9", rec.headers.x_forwarded_for)
  end)

  it("says Secure is the default beside the snippet, and the option drops it", function()
    local section = helpers.read_file("README.md"):match("\n### On OpenResty\n(.-)\n##")
    assert.matches("Cookies are `Secure` by default", section, 1, true)
    assert.matches("plain%-http staging host", section)
    local answer = openresty.get(shop, tmp .. "/jar-plain", "/")
    local ids = cookie_ids(answer.cookies)
    assert.equals(1, ids.user_lines)
    for _, line in ipairs(answer.cookies) do
      if line:find("^dn_") then assert.is_nil(line:find("Secure", 1, true), line) end
    end
  end)
end)
