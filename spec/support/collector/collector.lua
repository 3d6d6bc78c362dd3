-- Request handlers of the test collector. Runs inside nginx (LuaJIT +
-- lua-nginx-module); see nginx.conf.in for the locations that call these.
local cjson = require("cjson.safe")
local ffi = require("ffi")

local M = {}

local dict = ngx.shared.collector

local BOT_PATTERN = [[bot|crawler|spider|slurp|headless|python-requests]]
local SUCCESS = '{"status":"success"}'
local REQUIRED = {
  { field = "userId", code = "INVALID_USER_ID" },
  { field = "sessionId", code = "INVALID_SESSION_ID" },
  { field = "event", code = "INVALID_EVENT" },
}

pcall(ffi.cdef, [[
  int open(const char *path, int flags, ...);
  long write(int fd, const void *buf, unsigned long count);
  int close(int fd);
]])
local O_WRONLY, O_CREAT, O_APPEND = 0x1, 0x40, 0x400 -- Linux values

local function prefix_path(name)
  return (ngx.config.prefix():gsub("/*$", "/")) .. name
end

-- stdio may split a long line into several write(2) calls; a single
-- O_APPEND write keeps lines from different workers from interleaving.
local function append_line(name, line)
  line = line .. "\n"
  local fd = ffi.C.open(prefix_path(name), bit.bor(O_WRONLY, O_CREAT, O_APPEND), ffi.cast("int", 420))
  if fd < 0 then
    ngx.log(ngx.ERR, "collector: cannot open ", name, " errno ", ffi.errno())
    return
  end
  local written = ffi.C.write(fd, line, #line)
  if written ~= #line then
    ngx.log(ngx.ERR, "collector: short write to ", name, ": ", tonumber(written))
  end
  ffi.C.close(fd)
end

local function truncate(name)
  local f = io.open(prefix_path(name), "w")
  if f then f:close() end
end

local function error_body(code, message)
  return cjson.encode({ status = "error", code = code, message = message })
end

local function read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local file = ngx.req.get_body_file()
  if file then
    local f = io.open(file, "rb")
    if f then
      body = f:read("*a")
      f:close()
      return body
    end
  end
  return ""
end

local function request_record(body)
  ngx.update_time()
  local h = ngx.req.get_headers(200)
  local function header(...)
    for i = 1, select("#", ...) do
      local v = h[select(i, ...)]
      if type(v) == "table" then v = table.concat(v, ", ") end
      if v then return v end
    end
  end
  return {
    seq = dict:incr("seq", 1, 0),
    time = ngx.now(),
    method = ngx.req.get_method(),
    uri = ngx.var.request_uri,
    body = body,
    status = 0,
    scheme = ngx.var.scheme,
    http_version = ngx.req.http_version(),
    worker = ngx.worker.pid(),
    -- nginx's serial number of the connection within its worker: with worker, tells
    -- a reused connection from a new one.
    connection = tonumber(ngx.var.connection),
    headers = {
      idempotency_key = header("idempotency-key"),
      attempt = header("x-dukanext-attempt"),
      user_agent = header("user-agent"),
      x_forwarded_for = header("x-forwarded-for"),
      content_type = header("content-type"),
      content_length = header("content-length"),
    },
    all_headers = h,
  }
end

-- Logs the request, then sets the status and headers of the answer. The log line is
-- written before the answer so a client that got a response can read the record
-- right away.
local function begin_answer(rec, status, response, headers)
  rec.status = status
  rec.response = response
  append_line("requests.jsonl", cjson.encode(rec))
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  for k, v in pairs(headers or {}) do
    ngx.header[k] = v
  end
end

local function answer(rec, status, payload, headers)
  begin_answer(rec, status, payload, headers)
  if payload and status ~= 204 and status ~= 304 then
    ngx.print(payload)
  end
  return ngx.exit(ngx.HTTP_OK)
end

-- An answer whose body never ends (action.endless: seconds to go on, at most): the
-- headers, then 64 KiB chunks as fast as the client reads them, until it hangs up.
local function answer_endless(rec, status, headers, seconds)
  begin_answer(rec, status, "(endless)", headers)
  local chunk = SUCCESS .. string.rep(" ", 65536 - #SUCCESS)
  ngx.update_time()
  local deadline = ngx.now() + seconds
  while ngx.now() < deadline do
    if not ngx.print(chunk) or not ngx.flush(true) then break end
    ngx.update_time()
  end
  return ngx.exit(ngx.HTTP_OK)
end

local function close_connection(rec)
  rec.status = 0
  append_line("requests.jsonl", cjson.encode(rec))
  return ngx.exit(444)
end

-- Pops the next planned action (atomically across workers), falling back to
-- the sticky default. Returns nil for normal behaviour.
local function next_action()
  local len = dict:get("plan_len") or 0
  if len > 0 and (dict:get("plan_next") or 0) < len then
    local i = dict:incr("plan_next", 1, 0)
    if i <= len then
      local raw = dict:get("plan_" .. i)
      if raw then return cjson.decode(raw) end
    end
  end
  local raw = dict:get("plan_default")
  if raw then return cjson.decode(raw) end
end

-- What the real service does. Returns status, payload, outcome[, error code].
local function process(method, body)
  if method ~= "PUT" then
    return 405, error_body("METHOD_NOT_ALLOWED", "use PUT"), "invalid", "METHOD_NOT_ALLOWED"
  end
  local data = body:find("^%s*{") and cjson.decode(body)
  if type(data) ~= "table" then
    return 400, error_body("INVALID_BODY", "body must be a JSON object"), "invalid", "INVALID_BODY"
  end
  for _, r in ipairs(REQUIRED) do
    if type(data[r.field]) ~= "string" then
      return 400, error_body(r.code, r.field .. " is required and must be a string"), "invalid", r.code
    end
  end
  local ua = ngx.var.http_user_agent
  if ua and ngx.re.find(ua, BOT_PATTERN, "ijo") then
    return 200, SUCCESS, "bot"
  end
  -- The service's own dropping of a copy it has seen (byte-identical body), only when
  -- the collector was started with dedupe = true: without it every copy a client sends
  -- is logged, so that a spec can count them.
  if ngx.var.collector_dedupe == "on" and not dict:add("dup_" .. ngx.md5(body), true) then
    return 200, SUCCESS, "duplicate"
  end
  -- Raw CR/LF can only be insignificant whitespace in valid JSON, so this
  -- keeps the body one line without changing what it decodes to.
  append_line("events.jsonl", (body:gsub("[\r\n]", " ")))
  return 200, SUCCESS, "accepted"
end

local function planned_headers(action)
  local headers = {}
  if type(action.headers) == "table" then
    for k, v in pairs(action.headers) do headers[k] = v end
  end
  if action.retry_after ~= nil then headers["Retry-After"] = tostring(action.retry_after) end
  if action.location ~= nil then headers["Location"] = tostring(action.location) end
  return headers
end

function M.analytics()
  local body = read_body()
  local rec = request_record(body)
  -- Logged on arrival, before any planned delay: a spec can wait until a request it
  -- holds has reached the server, and until every request that arrived is answered.
  append_line("arrivals.jsonl", cjson.encode({ seq = rec.seq, time = rec.time,
    idempotency_key = rec.headers.idempotency_key }))
  local action = next_action()

  if not action then
    local status, payload, outcome, code = process(rec.method, body)
    rec.action, rec.code = outcome, code
    return answer(rec, status, payload, status == 405 and { Allow = "PUT" } or nil)
  end

  rec.action, rec.plan = "planned", action
  if tonumber(action.delay) then
    ngx.sleep(tonumber(action.delay))
  end

  local status = tonumber(action.status)
  local planned_success = status and status >= 200 and status < 300
  local payload, code
  -- Whatever still ends in a normal answer records the event; a planned
  -- failure or close only does so with process=true.
  if (not action.close and (not status or planned_success)) or action.process then
    local normal_status, normal_payload, outcome, normal_code = process(rec.method, body)
    rec.outcome = outcome
    if not status then
      status, payload, code = normal_status, normal_payload, normal_code
    end
  end

  if action.close then
    return close_connection(rec)
  end
  if tonumber(action.endless) then
    return answer_endless(rec, status or 200, planned_headers(action), tonumber(action.endless))
  end

  if action.body ~= nil then
    payload = type(action.body) == "string" and action.body or cjson.encode(action.body)
  elseif not payload then
    if planned_success then
      payload = SUCCESS
    elseif action.code then
      code = action.code
      payload = error_body(code, action.message or "planned error")
    else
      code = "HTTP_" .. status
      payload = cjson.encode({ status = "error", code = code })
    end
  end
  rec.code = code
  return answer(rec, status, payload, planned_headers(action))
end

-- The analytics location of a collector started with bench=true: the validation and
-- the answer of process(), each accepted event appended to events.jsonl through a
-- descriptor kept open, and nothing else (no request log, plan or dedupe), so that
-- the collector's own cost per request is small and steady and the ratios bench/
-- measures against it speak of the clients.
local events_fd
function M.analytics_bench()
  local body = read_body()
  local status, payload
  if ngx.req.get_method() ~= "PUT" then
    status, payload = 405, error_body("METHOD_NOT_ALLOWED", "use PUT")
  else
    local data = body:find("^%s*{") and cjson.decode(body)
    if type(data) ~= "table" then
      status, payload = 400, error_body("INVALID_BODY", "body must be a JSON object")
    else
      for _, r in ipairs(REQUIRED) do
        if type(data[r.field]) ~= "string" then
          status, payload = 400, error_body(r.code, r.field .. " is required and must be a string")
          break
        end
      end
    end
  end
  if not status then
    if not events_fd then
      events_fd = ffi.C.open(prefix_path("events.jsonl"), bit.bor(O_WRONLY, O_CREAT, O_APPEND),
        ffi.cast("int", 420))
    end
    local line = body:gsub("[\r\n]", " ") .. "\n"
    if events_fd < 0 or ffi.C.write(events_fd, line, #line) ~= #line then
      ngx.log(ngx.ERR, "collector: cannot append to events.jsonl errno ", ffi.errno())
    end
    status, payload = 200, SUCCESS
  end
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(payload)
  return ngx.exit(ngx.HTTP_OK)
end

-- The analytics location of a bench collector with a round trip: each answer waits
-- $bench_delay seconds (ngx.sleep, so thousands wait at once), and each connection is
-- counted once, on its first request, with whether its TLS session was resumed.
function M.analytics_wan()
  local key = "conn_" .. ngx.worker.pid() .. "_" .. ngx.var.connection
  if dict:add(key, true, 600) then
    dict:incr("connections", 1, 0)
    local reused = ngx.var.ssl_session_reused
    if reused then
      dict:incr("tls", 1, 0)
      if reused == "r" then dict:incr("tls_resumed", 1, 0) end
    end
  end
  ngx.sleep(tonumber(ngx.var.bench_delay))
  local overloaded_until = dict:get("overloaded_until")
  if overloaded_until and ngx.now() < overloaded_until then
    ngx.status = 503
    ngx.header["Content-Type"] = "application/json"
    ngx.print(error_body("OVERLOADED", "planned overload"))
    return ngx.exit(ngx.HTTP_OK)
  end
  return M.analytics_bench()
end

function M.too_large()
  local rec = request_record("")
  rec.action, rec.code = "invalid", "BODY_TOO_LARGE"
  return answer(rec, 413, error_body("BODY_TOO_LARGE", "body exceeds 2 MiB"))
end

local function control_answer(status, payload)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(payload)
  return ngx.exit(ngx.HTTP_OK)
end

function M.plan()
  local method = ngx.req.get_method()
  if method ~= "PUT" and method ~= "POST" then
    return control_answer(405, error_body("METHOD_NOT_ALLOWED", "use PUT"))
  end
  local spec = cjson.decode(read_body())
  if type(spec) ~= "table" then
    return control_answer(400, error_body("INVALID_BODY", "expected {\"actions\":[...],\"default\":{...}}"))
  end
  local actions = spec.actions or {}
  local default = spec.default
  if default == cjson.null then default = nil end
  if type(actions) ~= "table" or (default ~= nil and type(default) ~= "table") then
    return control_answer(400, error_body("INVALID_BODY", "actions must be a list, default an object"))
  end
  for i, a in ipairs(actions) do
    if type(a) ~= "table" then
      return control_answer(400, error_body("INVALID_BODY", "action " .. i .. " is not an object"))
    end
  end

  dict:set("plan_len", 0)
  for i, a in ipairs(actions) do
    local ok, err = dict:set("plan_" .. i, cjson.encode(a))
    if not ok then
      return control_answer(500, error_body("PLAN_STORE_FAILED", err))
    end
  end
  dict:set("plan_next", 0)
  dict:set("plan_len", #actions)
  dict:set("plan_default", default and cjson.encode(default) or nil)
  return control_answer(200, cjson.encode({ status = "ok", actions = #actions }))
end

function M.reset()
  local method = ngx.req.get_method()
  if method ~= "POST" and method ~= "PUT" then
    return control_answer(405, error_body("METHOD_NOT_ALLOWED", "use POST"))
  end
  dict:flush_all()
  dict:flush_expired()
  truncate("events.jsonl")
  truncate("requests.jsonl")
  truncate("arrivals.jsonl")
  return control_answer(200, '{"status":"ok"}')
end

-- POST /_collector/overload?seconds=N: a bench collector with a round trip answers
-- 503 for the next N seconds.
function M.overload()
  ngx.update_time()
  dict:set("overloaded_until", ngx.now() + (tonumber(ngx.var.arg_seconds) or 1))
  return control_answer(200, '{"status":"ok"}')
end

function M.connections()
  return control_answer(200, cjson.encode({
    connections = dict:get("connections") or 0,
    tls = dict:get("tls") or 0,
    tls_resumed = dict:get("tls_resumed") or 0,
  }))
end

function M.health()
  ngx.header["Content-Type"] = "text/plain"
  ngx.header["X-Collector-Generation"] = ngx.var.collector_generation
  ngx.print("ok")
  return ngx.exit(ngx.HTTP_OK)
end

return M
