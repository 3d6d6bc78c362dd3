-- The storefront at scale: two nginx workers (LuaJIT build, dukanext.ngx pumping)
-- emit steadily toward a collector whose answers come 50 ms late over TLS with HTTP/2
-- offered. With the defaults, no worker refuses an event (QUEUE_FULL) and each uses
-- at most two connections. A fixed max_in_flight = 16 (the old default) could not
-- keep up: 16 / 50 ms is about 320 events a second per worker, under the rate here.
-- Needs the LuaJIT build of the module (cmake -DDUKANEXT_ALL_LUAS=ON, or
-- DUKANEXT_LUAJIT_CPATH). Counts only; no timing is asserted.
local helpers = require("spec.helpers")
local cjson = require("cjson")
local collector_lib = helpers.collector_lib

local REPO = helpers.shell("pwd")
local LUAJIT_CPATH = require("spec.support.openresty").luajit_cpath()

-- Per worker: events a second, for how long, and the queue they must fit in.
local RATE, SECONDS, MAX_QUEUE = 800, 4, 500
local TOTAL = RATE * SECONDS

local CONF = [[
load_module {{modules_dir}}/ndk_http_module.so;
load_module {{modules_dir}}/ngx_http_lua_module.so;
{{user}}
daemon on;
master_process on;
worker_processes 2;
pid {{prefix}}/nginx.pid;
error_log {{prefix}}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path {{prefix}}/tmp;
  proxy_temp_path {{prefix}}/tmp;
  fastcgi_temp_path {{prefix}}/tmp;
  uwsgi_temp_path {{prefix}}/tmp;
  scgi_temp_path {{prefix}}/tmp;
  lua_package_path "{{repo}}/lua/?.lua;;";
  lua_package_cpath "{{cpath}};;";
  lua_shared_dict emitters 1m;

  # Each worker emits RATE events a second (on a schedule, as page views arrive),
  # TOTAL in all, and publishes what it counted.
  init_worker_by_lua_block {
    local cjson = require("cjson")
    local client = require("dukanext.ngx").init_worker({
      endpoint = "{{endpoint}}", ca_file = "{{ca_file}}", max_queue = {{max_queue}},
    })
    local emitters = ngx.shared.emitters
    local pid = ngx.worker.pid()
    local started
    local emitted, refused = 0, 0
    local function tick(premature)
      if premature then return end
      ngx.update_time()
      -- From the first tick: a worker that starts slowly does not catch up in a burst.
      started = started or ngx.now()
      local due = math.min({{total}}, math.floor((ngx.now() - started) * {{rate}}))
      while emitted < due do
        emitted = emitted + 1
        if not client:emit("page_view", { url = "/p/" .. emitted, worker = pid }) then
          refused = refused + 1
        end
      end
      local s = client:stats()
      emitters:set(pid, cjson.encode({ emitted = emitted, refused = refused, sent = s.sent,
        dropped = s.dropped, connects = s.connects, limit = s.in_flight_limit }))
    end
    assert(ngx.timer.every(0.01, tick))
  }

  server {
    listen 127.0.0.1:{{port}};
    location = /emitters {
      content_by_lua_block {
        local out = {}
        for _, pid in ipairs(ngx.shared.emitters:get_keys(0)) do
          out[#out + 1] = ngx.shared.emitters:get(pid)
        end
        ngx.print("[", table.concat(out, ","), "]")
      }
    }
  }
}
]]

local function render(vars)
  return (CONF:gsub("{{([%w_]+)}}", function(name)
    return tostring(assert(vars[name], "no value for " .. name))
  end))
end

-- Like spec/90's nginx cases: with the LuaJIT suite (ctest's busted-luajit), or
-- anywhere with DUKANEXT_OPENRESTY=1; the other suites leave it to that one.
local RUN = jit ~= nil or os.getenv("DUKANEXT_OPENRESTY") == "1"
local describe_in_nginx = RUN and describe or function() end

describe_in_nginx("two nginx workers emitting toward a collector 50 ms away (TLS, HTTP/2)", function()
  local collector, prefix, port

  setup(function()
    assert(LUAJIT_CPATH, "needs the LuaJIT build of the module (cmake -DDUKANEXT_ALL_LUAS=ON"
      .. " with luajit2 installed, or DUKANEXT_LUAJIT_CPATH)")
    collector = collector_lib.start({ bench = true, delay = 0.05, tls = true, http2 = "tls" })
    prefix = helpers.tmpdir()
    helpers.shell("mkdir -p " .. helpers.quote(prefix .. "/tmp"))
    port = collector_lib.free_port()
    local conf = prefix .. "/nginx.conf"
    local f = assert(io.open(conf, "w"))
    f:write(render({
      modules_dir = collector_lib.MODULES_DIR,
      user = helpers.shell("id -u") == "0" and "user root;" or "",
      prefix = prefix, repo = REPO, cpath = LUAJIT_CPATH, port = port,
      endpoint = collector.tls_url, ca_file = collector.ca_file,
      max_queue = MAX_QUEUE, rate = RATE, total = TOTAL,
    }))
    f:close()
    local out = helpers.shell(helpers.quote(collector_lib.NGINX) .. " -p " .. helpers.quote(prefix .. "/")
      .. " -c " .. helpers.quote(conf) .. " -e " .. helpers.quote(prefix .. "/error.log") .. " 2>&1; echo rc=$?")
    assert(out:match("rc=0$"), "nginx did not start: " .. out .. (helpers.read_file(prefix .. "/error.log") or ""))
  end)

  teardown(function()
    local pid = prefix and tonumber(helpers.read_file(prefix .. "/nginx.pid") or "")
    if pid then
      helpers.shell("kill -TERM " .. pid)
      helpers.pump_until(function() return not helpers.read_file("/proc/" .. pid .. "/stat") end, 10)
    end
    if prefix then helpers.remove_tree(prefix) end
    if collector then collector:stop() end
  end)

  local function emitters()
    local status, body = collector_lib.request("GET", "http://127.0.0.1:" .. port .. "/emitters")
    if status ~= 200 then return {} end
    return cjson.decode(body)
  end

  it("delivers every event without QUEUE_FULL, on at most two connections per worker", function()
    local list
    helpers.pump_until(function()
      list = emitters()
      if #list < 2 then return false end
      for _, w in ipairs(list) do
        if w.sent + w.refused < TOTAL then return false end
      end
      return true
    end, 60)
    assert.equals(2, #list, "workers reporting: " .. cjson.encode(list))
    for _, w in ipairs(list) do
      local said = cjson.encode(w)
      assert.equals(TOTAL, w.emitted, said)
      assert.equals(0, w.refused, said)
      assert.equals(0, w.dropped, said)
      assert.equals(TOTAL, w.sent, said)
      assert.is_true(w.connects <= 2, said)
    end
    assert.is_true(collector:connections().connections <= 4)
    assert.equals(2 * TOTAL, #collector:event_lines())
    assert.is_nil(helpers.read_file(prefix .. "/error.log"):match("%[error%][^\n]*"))
  end)
end)
