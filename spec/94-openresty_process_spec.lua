-- OpenResty, the processes: README's own snippet (README.md, "On OpenResty") in
-- real nginx workers with the LuaJIT build. An event emitted in init_by_lua (the
-- master, which forks the workers and never pumps) is refused rather than accepted
-- and lost; a worker that exits with the collector down waits flush_timeout in all.
local helpers = require("spec.helpers")
local openresty = require("spec.support.openresty")
local collector_lib = require("spec.support.collector")
local cjson = require("cjson")

if not openresty.runs_here() then return end

describe("README's OpenResty snippet with an emit in init_by_lua (the master)", function()
  local collector, shop, tmp

  setup(function()
    tmp = helpers.tmpdir()
    collector = helpers.start_collector()
    shop = openresty.start({ endpoint = collector.url, files = { ["index.html"] = "home" },
      init = [[
        local dn = require("dukanext")
        dn.configure({ endpoint = "{{endpoint}}" })
        local ok, err = dn.emit("master_boot")
        local called, helper_ok, helper_err = pcall(require("dukanext.ngx").emit, "master_boot_helper")
        package.loaded["spec.boot"] = { ok = ok or false, err = err or false,
          helper_ok = called and helper_ok or false, helper_err = helper_err or false }
      ]],
      server = [[
        location = /_boot {
          content_by_lua_block { ngx.say(require("cjson").encode(package.loaded["spec.boot"])) }
        }
      ]] })
  end)

  teardown(function()
    if shop then shop:stop() end
    if collector then collector:stop() end
    if tmp then helpers.remove_tree(tmp) end
  end)

  it("refuses with WRONG_PHASE there, while the workers emit as usual", function()
    local boot = cjson.decode(openresty.get(shop, nil, "/_boot").body)
    assert.is_false(boot.ok)
    assert.matches("^WRONG_PHASE: nginx's master %(init_by_lua%) never sends events", boot.err)
    assert.is_false(boot.helper_ok)
    assert.matches("^WRONG_PHASE: ", boot.helper_err)

    -- The workers the master forked are not bound by it.
    assert.equals(200, openresty.get(shop, tmp .. "/jar", "/").status)
    local events = openresty.settled_events(collector, 1)
    assert.equals(1, #events)
    assert.equals("page_view", events[1].event)
  end)
end)

describe("README's OpenResty snippet on nginx -s quit with the collector down", function()
  local FLUSH_TIMEOUT = 3
  local shop, tmp

  setup(function()
    tmp = helpers.tmpdir()
    -- Nothing listens there: every attempt fails to connect and is retried.
    local endpoint = ("http://127.0.0.1:%d/access/api/v1/analytics"):format(collector_lib.free_port())
    shop = openresty.start({ endpoint = endpoint, workers = 2, files = { ["index.html"] = "home" },
      worker_options = ("flush_timeout = %d, max_retries = 100, retry_base = 0.05, retry_max = 0.2,")
        :format(FLUSH_TIMEOUT) })
  end)

  teardown(function()
    if shop then shop:stop() end
    if tmp then helpers.remove_tree(tmp) end
  end)

  it("exits within one flush_timeout, having waited for its events", function()
    for i = 1, 6 do
      assert.equals(200, openresty.get(shop, tmp .. "/jar-" .. i, "/").status)
    end
    local started = helpers.now()
    assert.is_true(shop:quit(30), "nginx did not exit after -s quit")
    local took = helpers.now() - started
    -- The workers waited for delivery (lower bound), once (upper bound: one more
    -- flush_timeout would be twice as long).
    assert.is_true(took >= FLUSH_TIMEOUT - 0.5, ("exited after %.2f s"):format(took))
    assert.is_true(took < FLUSH_TIMEOUT + helpers.within(2), ("exited after %.2f s"):format(took))
    assert.matches("undelivered events", shop:error_log_text(), 1, true)
  end)
end)
