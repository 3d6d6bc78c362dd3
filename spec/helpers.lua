-- Shared by the specs: finds the module under test, starts the collector, pumps.
local helpers = {}

-- ctest points DUKANEXT_CPATH at the build under test (plain or sanitized).
local cpath = os.getenv("DUKANEXT_CPATH") or "./build/?.so"
if not package.cpath:find(cpath, 1, true) then
  package.cpath = cpath .. ";" .. package.cpath
end

local socket = require("socket")
local cjson = require("cjson")
helpers.collector_lib = require("spec.support.collector")

helpers.now = socket.gettime
helpers.sleep = socket.sleep

function helpers.dn()
  return require("dukanext")
end

function helpers.start_collector(opts)
  return helpers.collector_lib.start(opts or {})
end

-- Options that make retries quick enough for a test, merged under opts.
function helpers.fast(opts)
  local o = { retry_base = 0.02, retry_max = 0.2, timeout = 2, connect_timeout = 1 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return o
end

-- Pumps until pred() holds or timeout seconds pass; answers pred's last value.
function helpers.pump_until(pred, timeout)
  local dn = helpers.dn()
  local deadline = socket.gettime() + (timeout or 5)
  repeat
    dn.pump()
    local v = pred()
    if v then return v end
    socket.sleep(0.005)
  until socket.gettime() > deadline
  return pred()
end

function helpers.decode(s)
  return cjson.decode(s)
end

-- A storage backed by a plain table, that records every call.
function helpers.recording_storage(initial)
  local data, calls = {}, {}
  for k, v in pairs(initial or {}) do data[k] = v end
  local s = { data = data, calls = calls }
  function s.get(key)
    calls[#calls + 1] = { "get", key }
    return data[key]
  end
  function s.set(key, value)
    calls[#calls + 1] = { "set", key, value }
    data[key] = value
  end
  return s
end

helpers.UUID = "%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x"
helpers.USER_ID = "^" .. helpers.UUID .. "%-%d+$"
helpers.SESSION_ID = "^SESSION%-" .. helpers.UUID .. "%-%d+$"

return helpers
