-- dukanext.ngx: dukanext inside OpenResty / nginx with lua-nginx-module.
--
--   local dnx = require("dukanext.ngx")
--
-- dnx.init_worker(opts)
--   Call from init_worker_by_lua. Configures the module's default client with
--   dn.configure(opts) and starts a pump timer in this worker
--   (ngx.timer.every(pump_interval)). While transfers make progress, a tick
--   keeps pumping about every millisecond (ngx.sleep yields to nginx), so
--   delivery keeps up with a busy worker; once nothing moves it falls back to
--   the timer. When the worker exits (nginx -s reload, -s quit) the timer runs
--   one last time and flushes with a deadline; events emitted through dnx.emit
--   while the worker drains are flushed by a zero-delay timer (the only kind
--   nginx still runs then). Helper-only options, removed
--   before dn.configure sees opts:
--     pump_interval  seconds between pumps when idle (default 0.05)
--     flush_timeout  seconds the exiting worker waits for delivery, in all (default 3)
--   on_error defaults to logging each failure at ngx.WARN; pass your own to
--   replace it (on_error = false: none). Returns the default client.
--
-- dnx.exit_worker()
--   Optional, for exit_worker_by_lua: a last flush for events emitted with dn.emit
--   directly after the pump timer stopped. The whole exit (the timer's last run,
--   exit_worker and the flushes of late events) shares one deadline, flush_timeout
--   after the first of them started.
--
-- dnx.header_filter()
--   Call from header_filter_by_lua: puts this request's dukanext cookies into the
--   answer, merged with whatever Set-Cookie the application set or appended (an
--   assignment to ngx.header["Set-Cookie"] after dnx.emit would otherwise remove
--   them), and removes the helper's own state header (below).
--
-- dnx.identify(customers_id)
--   The logged-in customer for the current request only (nil, false or "": a guest);
--   dnx.emit sends it (hasCustomerAccount, customersId) and sends every other request
--   as anonymous. The client-wide dn.identify would name that customer on every
--   visitor's events of the worker: called while serving a request, it logs a
--   warning once per worker.
--
-- dnx.cookie_storage([opts])
--   A storage for the request being handled: get(key) reads what set wrote earlier
--   in this request, else the request's cookie (unescaped); set(key, value) adds a
--   Set-Cookie header (value escaped with ngx.escape_uri), replacing one of the same
--   name set earlier in this request, and dnx.header_filter adds it again if the
--   application removed it. Make one per request: the module keeps an id that a
--   storage failed to store per storage object, so sharing one object between
--   visitors could hand one visitor's id to another. Usable where ngx.var and
--   ngx.header are (rewrite, access, content, header filter).
--   Options (cookie attributes):
--     path       "/"           Path
--     domain     none          Domain
--     max_age    63072000      Max-Age in seconds (two years; the session record
--                              carries its own expiry), false: a browser-session cookie
--     secure     true          Secure (browsers drop Secure cookies on plain http)
--     http_only  true          HttpOnly
--     same_site  "Lax"         SameSite: "Strict", "Lax", "None" or false
--
-- dnx.emit(event [, metadata [, fields]])
--   dn.emit with the visitor filled in from the request, unless fields has them:
--   storage = this request's cookie storage (dnx.cookie_storage(cookie options
--   given to dnx.set_cookie_options), once per request), userAgent =
--   User-Agent (cut to 2048 bytes), clientIp = ngx.var.remote_addr (the peer, or
--   the client nginx's real_ip module found behind a proxy), referrerUrl = Referer,
--   customersId / hasCustomerAccount = dnx.identify of this request (a guest when
--   none). One event per request the browser made: an event emitted before an
--   internal redirect (index, try_files, error_page, ngx.exec) is not emitted again
--   after it (answers true). Answers what dn.emit answers: true, or nil,
--   "CODE: reason"; in init_by_lua (nginx's master, which never sends),
--   nil, "WRONG_PHASE: ...".
--
-- dnx.set_cookie_options(opts)
--   The cookie options dnx.emit uses (default: the defaults above).
--
-- Per-request state (the cookies set, the customer, the events emitted) must outlive
-- internal redirects, which give the request a fresh ngx.ctx. nginx keeps a
-- request's response headers across them, so the helper keeps a copy of that state
-- in a response header of its own, X-Dukanext-State, which dnx.header_filter removes
-- before the answer leaves (a client cannot set a response header, and unlike a
-- request header it never reaches a proxied upstream).
--
-- Storage callbacks run inside emit behind a C call boundary: they must not
-- yield, so no cosockets in them; ngx.var, ngx.ctx and ngx.header are fine.
local dn = require("dukanext")
local json = require("cjson.safe").new()

local M = { _VERSION = dn._VERSION, dn = dn }

local ngx = ngx

local DEFAULT_PUMP_INTERVAL = 0.05
local DEFAULT_FLUSH_TIMEOUT = 3
local USER_AGENT_MAX = dn.USER_AGENT_MAX
local CTX_STATE = "dukanext_request"
local CTX_STORAGE = "dukanext_storage"
local STATE_HEADER = "X-Dukanext-State"

local state = {
  flush_timeout = DEFAULT_FLUSH_TIMEOUT,
  pump_interval = DEFAULT_PUMP_INTERVAL,
  pumping = false,      -- a tick is pumping in a loop
  started = false,      -- the pump timer runs
  stopped = false,      -- the pump timer ran its last time (worker exiting)
  exit_flush_due = false,
  exit_deadline = nil,  -- when the exiting worker stops waiting (ngx.now() seconds)
}

local function log_error(err)
  ngx.log(ngx.WARN, "dukanext: ", tostring(err.event or "storage"), " failed: ",
    tostring(err.code), " (", tostring(err.message), ")",
    err.attempts and (" after " .. err.attempts .. " attempts") or "")
end

-- Every flush of an exiting worker waits until one deadline, set by the first: the
-- exit takes flush_timeout in all, however many of them run.
local function flush_now()
  ngx.update_time()
  if not state.exit_deadline then state.exit_deadline = ngx.now() + state.flush_timeout end
  local left = math.max(0, state.exit_deadline - ngx.now())
  local ok, err, pending = dn.flush(left)
  if not ok then
    ngx.log(ngx.ERR, "dukanext: worker exiting with ", tostring(pending),
      " undelivered events (", tostring(err), ": flush_timeout is ", state.flush_timeout, " s)")
  end
end

-- A transfer moves on only when pumped, and nginx cannot watch dn.poll_fd() for
-- us: pumping every pump_interval alone would cap each worker at max_in_flight
-- events per interval (16 / 0.05 s = 320 a second). So while transfers make
-- progress, the tick keeps pumping from its own coroutine with short sleeps
-- (which yield to nginx), backing off to the heartbeat once nothing changes.
local BUSY_SLEEP = 0.001

local function pump_tick(premature)
  if premature then
    state.stopped = true
    return flush_now()
  end
  if state.pumping then return end
  local pending = dn.pump()
  if pending == 0 then return end
  state.pumping = true
  local ok, err = pcall(function()
    local wait = BUSY_SLEEP
    while not ngx.worker.exiting() do
      ngx.sleep(wait)
      local now_pending = dn.pump()
      if now_pending == 0 then return end
      if now_pending ~= pending then
        wait = BUSY_SLEEP
      else
        wait = wait * 2
        if wait >= state.pump_interval then return end
      end
      pending = now_pending
    end
  end)
  state.pumping = false
  if not ok then ngx.log(ngx.ERR, "dukanext: pump loop failed: ", tostring(err)) end
end

local function exit_flush_tick()
  state.exit_flush_due = false
  flush_now()
end

-- Once the pump timer has stopped, nginx runs only zero-delay timers: one of those
-- delivers what requests still being served by the draining worker emit.
local function after_emit()
  if not (state.stopped or (state.started and ngx.worker.exiting())) then return end
  if state.exit_flush_due then return end
  local ok, err = ngx.timer.at(0, exit_flush_tick)
  if ok then
    state.exit_flush_due = true
  else
    ngx.log(ngx.ERR, "dukanext: cannot schedule the exit flush: ", tostring(err))
  end
end

function M.init_worker(opts)
  opts = opts or {}
  local conf = {}
  for k, v in pairs(opts) do conf[k] = v end
  local interval = conf.pump_interval or DEFAULT_PUMP_INTERVAL
  local flush_timeout = conf.flush_timeout or DEFAULT_FLUSH_TIMEOUT
  conf.pump_interval, conf.flush_timeout = nil, nil
  if type(interval) ~= "number" or interval <= 0 then
    error("dukanext.ngx: pump_interval must be a number of seconds > 0", 2)
  end
  if type(flush_timeout) ~= "number" or flush_timeout < 0 then
    error("dukanext.ngx: flush_timeout must be a number of seconds >= 0", 2)
  end
  if conf.on_error == nil then
    conf.on_error = log_error
  elseif conf.on_error == false then
    conf.on_error = nil
  end
  local client = dn.configure(conf)
  state.flush_timeout = flush_timeout
  state.pump_interval = interval
  if not state.started then
    local ok, err = ngx.timer.every(interval, pump_tick)
    if not ok then error("dukanext.ngx: cannot start the pump timer: " .. tostring(err), 2) end
    state.started = true
  end
  return client
end

function M.exit_worker()
  state.stopped = true
  flush_now()
end

-- Per-request state -----------------------------------------------------------

-- This request's state: { cookies = { { name, value or false, Set-Cookie line }, ... },
-- customer = id or nil, emitted = { [event] = true } }, and what earlier passes of
-- the request (before an internal redirect) emitted. Kept in ngx.ctx for this pass,
-- read back from the state header in a later one.
local function request_state()
  local ctx = ngx.ctx
  local st = ctx[CTX_STATE]
  if st then return st end
  st = { cookies = {}, emitted = {}, emitted_before = {} }
  local saved = ngx.header[STATE_HEADER]
  local copy = type(saved) == "string" and json.decode(saved)
  if type(copy) == "table" then
    for _, c in ipairs(type(copy.cookies) == "table" and copy.cookies or {}) do
      if type(c[1]) == "string" and type(c[3]) == "string"
        and (type(c[2]) == "string" or c[2] == false) then
        st.cookies[#st.cookies + 1] = { c[1], c[2], c[3] }
      end
    end
    if type(copy.customer) == "string" then st.customer = copy.customer end
    for _, event in ipairs(type(copy.emitted) == "table" and copy.emitted or {}) do
      if type(event) == "string" then st.emitted_before[event] = true end
    end
  end
  ctx[CTX_STATE] = st
  return st
end

local function save_state(st)
  if ngx.headers_sent then return end
  local emitted = {}
  for event in pairs(st.emitted_before) do emitted[#emitted + 1] = event end
  for event in pairs(st.emitted) do
    if not st.emitted_before[event] then emitted[#emitted + 1] = event end
  end
  ngx.header[STATE_HEADER] = json.encode({
    cookies = st.cookies,
    customer = st.customer,
    emitted = emitted,
  })
end

local function find_cookie(st, name)
  for _, c in ipairs(st.cookies) do
    if c[1] == name then return c end
  end
end

-- The Set-Cookie lines of the answer so far without those named in `names`, plus `lines`.
local function merge_set_cookie(names, lines)
  local merged = {}
  local current = ngx.header["Set-Cookie"]
  if type(current) == "string" then current = { current } end
  for _, v in ipairs(current or {}) do
    local name = v:match("^%s*([^=%s]+)%s*=")
    if not names[name] then merged[#merged + 1] = v end
  end
  for _, line in ipairs(lines) do merged[#merged + 1] = line end
  ngx.header["Set-Cookie"] = merged
end

function M.header_filter()
  -- Most answers (assets, APIs without analytics) have no state: leave them alone.
  if not ngx.ctx[CTX_STATE] and ngx.header[STATE_HEADER] == nil then return end
  local st = request_state()
  ngx.header[STATE_HEADER] = nil
  if #st.cookies == 0 then return end
  local names, lines = {}, {}
  for i, c in ipairs(st.cookies) do
    names[c[1]] = true
    lines[i] = c[3]
  end
  merge_set_cookie(names, lines)
end

function M.identify(customers_id)
  if customers_id == false or customers_id == "" then customers_id = nil end
  if customers_id ~= nil and type(customers_id) ~= "string" then
    error("dukanext.ngx: identify takes a customer id string (nil, false or \"\" for a guest)", 2)
  end
  local st = request_state()
  st.customer = customers_id
  save_state(st)
end

-- The client-wide dn.identify, wrapped once per Lua state (the helper may be loaded
-- again) to say what it does when a request calls it.
local REQUEST_PHASES = {
  set = true, rewrite = true, server_rewrite = true, access = true, content = true,
  header_filter = true, body_filter = true, log = true, balancer = true,
}
local IDENTIFY_KEY = "dukanext.ngx: dn.identify"
local client_wide_identify = package.loaded[IDENTIFY_KEY] or dn.identify
package.loaded[IDENTIFY_KEY] = client_wide_identify
local warned_identify = false

dn.identify = function(...)
  if not warned_identify and ngx and ngx.get_phase and REQUEST_PHASES[ngx.get_phase()] then
    warned_identify = true
    ngx.log(ngx.WARN, "dukanext: dn.identify() called while serving a request names that",
      " customer on the events of every visitor this worker serves after it (dnx.emit",
      " ignores it and sends each request as a guest): call",
      " require(\"dukanext.ngx\").identify(id) for the current request instead",
      " (said once per worker)")
  end
  return client_wide_identify(...)
end

-- Cookie storage ---------------------------------------------------------------

local SAME_SITE = { strict = "Strict", lax = "Lax", none = "None" }

local function check_attribute(name, value)
  if type(value) ~= "string" or value == "" or value:find("[%c;]") then
    error("dukanext.ngx: cookie option " .. name .. " must be a non-empty string without ';' or control characters", 3)
  end
  return value
end

local function cookie_attributes(opts)
  opts = opts or {}
  local known = { path = true, domain = true, max_age = true, secure = true, http_only = true, same_site = true }
  for k in pairs(opts) do
    if not known[k] then error("dukanext.ngx: unknown cookie option " .. tostring(k), 3) end
  end
  local parts = { "; Path=" .. check_attribute("path", opts.path == nil and "/" or opts.path) }
  if opts.domain ~= nil then
    parts[#parts + 1] = "; Domain=" .. check_attribute("domain", opts.domain)
  end
  local max_age = opts.max_age
  if max_age == nil then max_age = 63072000 end
  if max_age ~= false then
    if type(max_age) ~= "number" or max_age < 0 or max_age ~= math.floor(max_age) then
      error("dukanext.ngx: cookie option max_age must be a whole number of seconds >= 0 or false", 3)
    end
    parts[#parts + 1] = ("; Max-Age=%d"):format(max_age)
  end
  if opts.secure ~= false then parts[#parts + 1] = "; Secure" end
  if opts.http_only ~= false then parts[#parts + 1] = "; HttpOnly" end
  local same_site = opts.same_site
  if same_site == nil then same_site = "Lax" end
  if same_site ~= false then
    local canonical = type(same_site) == "string" and SAME_SITE[same_site:lower()]
    if not canonical then
      error("dukanext.ngx: cookie option same_site must be \"Strict\", \"Lax\", \"None\" or false", 3)
    end
    parts[#parts + 1] = "; SameSite=" .. canonical
  end
  return table.concat(parts)
end

local function make_storage(attributes)
  local storage = {}

  function storage.get(key)
    local set_earlier = find_cookie(request_state(), key)
    if set_earlier then return set_earlier[2] or nil end
    local raw = ngx.var["cookie_" .. key]
    if raw == nil or raw == "" then return nil end
    raw = raw:match('^"(.*)"$') or raw
    return ngx.unescape_uri(raw)
  end

  function storage.set(key, value)
    local line
    if value == nil then
      line = key .. "=; Max-Age=0" .. attributes:gsub("; Max%-Age=%d+", "")
    else
      line = key .. "=" .. ngx.escape_uri(value) .. attributes
    end
    local st = request_state()
    local c = find_cookie(st, key)
    if c then
      c[2], c[3] = value or false, line
    else
      st.cookies[#st.cookies + 1] = { key, value or false, line }
    end
    -- At once too, for a configuration without dnx.header_filter.
    merge_set_cookie({ [key] = true }, { line })
    if not st.emitting then save_state(st) end
  end

  return storage
end

function M.cookie_storage(opts)
  return make_storage(cookie_attributes(opts))
end

-- dnx.emit ---------------------------------------------------------------------

local default_attributes = cookie_attributes(nil)

function M.set_cookie_options(opts)
  default_attributes = cookie_attributes(opts)
end

local WRONG_PHASE = "WRONG_PHASE: nginx's master (init_by_lua) never sends events;"
  .. " emit from a worker: init_worker_by_lua, a request or a timer"

function M.emit(event, metadata, fields)
  if ngx.get_phase and ngx.get_phase() == "init" then return nil, WRONG_PHASE end
  local st = request_state()
  if type(event) == "string" and st.emitted_before[event] then return true end
  local f = {}
  for k, v in pairs(fields or {}) do f[k] = v end
  if f.storage == nil then
    local ctx = ngx.ctx
    local storage = ctx[CTX_STORAGE]
    if not storage then
      storage = make_storage(default_attributes)
      ctx[CTX_STORAGE] = storage
    end
    f.storage = storage
  end
  if f.userAgent == nil then
    local ua = ngx.var.http_user_agent
    if ua and not ua:find("[%z\r\n]") then f.userAgent = ua:sub(1, USER_AGENT_MAX) end
  end
  if f.clientIp == nil then
    -- "unix:" on a unix socket: not an address, and emit would refuse it.
    local ip = ngx.var.remote_addr
    if ip and ip:find("^[%x.:]+$") then f.clientIp = ip end
  end
  if f.referrerUrl == nil then f.referrerUrl = ngx.var.http_referer end
  if f.customersId == nil and f.hasCustomerAccount == nil then
    f.hasCustomerAccount = st.customer ~= nil
    f.customersId = st.customer or json.null
  end
  -- The storage's writes are saved once, after emit.
  st.emitting = true
  local ok, err = dn.emit(event, metadata, f)
  st.emitting = false
  if ok or (err and err:find("^SPOOL_ERROR")) then st.emitted[event] = true end
  save_state(st)
  after_emit()
  return ok, err
end

return M
