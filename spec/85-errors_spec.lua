-- Errors that guide: each mistake a new user makes is answered with what to write
-- instead.
local helpers = require("spec.helpers")

local dn = helpers.dn()

-- The message of what fn(...) raised, without the position luaL_error puts in front.
local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "did not raise")
  return (tostring(err):gsub("^[^\n:]*%.lua:%d+: ", "", 1))
end

local EP = "http://127.0.0.1:1/x"

describe("errors that guide", function()
  describe("an unknown option", function()
    local cases = {
      { "onError", "on_error" },
      { "url", "endpoint" },
      { "endpont", "endpoint" },
      { "maxRetries", "max_retries" },
      { "retryMax", "retry_max" },
      { "userAgent", "user_agent" },
      { "timout", "timeout" },
    }
    for _, case in ipairs(cases) do
      it(("'%s' suggests '%s'"):format(case[1], case[2]), function()
        local opts = { endpoint = EP }
        if case[1] ~= "url" then opts[case[1]] = 1 else opts = { url = EP } end
        assert.equals(("dukanext: unknown option '%s' (did you mean '%s'?)"):format(case[1], case[2]),
          raised(dn.new, opts))
      end)
    end

    it("that resembles nothing suggests nothing", function()
      assert.equals("dukanext: unknown option 'colour'", raised(dn.new, { endpoint = EP, colour = 1 }))
    end)
  end)

  describe("an unknown field of emit", function()
    local cases = {
      { "referer", "referrerUrl" },
      { "referrer", "referrerUrl" },
      { "user_agent", "userAgent" },
      { "client_ip", "clientIp" },
      { "customerId", "customersId" },
      { "sessionStartpage", "sessionStartPage" },
    }
    for _, case in ipairs(cases) do
      it(("'%s' suggests '%s'"):format(case[1], case[2]), function()
        local cl = dn.new({ endpoint = EP })
        finally(function() cl:close() end)
        local ok, err = cl:emit("page_view", {}, { [case[1]] = "x" })
        assert.is_nil(ok)
        assert.equals(("INVALID_FIELD: unknown field '%s' (did you mean '%s'?)"):format(case[1], case[2]), err)
      end)
    end
  end)

  describe("an endpoint without scheme", function()
    for _, url in ipairs({ "127.0.0.1:8080/access/api/v1/analytics", "localhost:8080/x",
                           "shop.example.com/access/api/v1/analytics" }) do
      it(("(%s) says http:// or https:// is required"):format(url), function()
        assert.equals("dukanext: option 'endpoint' has no scheme: http:// or https:// is required "
          .. "(\"https://host/path\"): " .. url, raised(dn.new, { endpoint = url }))
      end)
    end
  end)

  describe("metadata lua-cjson cannot encode", function()
    local function refusal(metadata)
      local cl = dn.new({ endpoint = EP })
      finally(function() cl:close() end)
      local ok, err = cl:emit("order", metadata)
      assert.is_nil(ok)
      return err
    end

    it("names the path of the value", function()
      assert.equals("INVALID_METADATA: metadata.items[3].price: cannot encode a function",
        refusal({ items = { { price = 1 }, { price = 2 }, { price = print } } }))
      assert.equals("INVALID_METADATA: metadata.total: cannot encode NaN or infinity",
        refusal({ total = 1 / 0 }))
      assert.equals("INVALID_METADATA: metadata[\"odd key\"].co: cannot encode a coroutine",
        refusal({ ["odd key"] = { co = coroutine.create(function() end) } }))
      assert.equals("INVALID_METADATA: metadata.cart[boolean key]: a key must be a string or a number",
        refusal({ cart = { [true] = 1 } }))
    end)

    it("names where a cycle was cut", function()
      local cycle = {}
      cycle.self = cycle
      assert.matches("^INVALID_METADATA: metadata%.loop%.self%.self.*: nested deeper than 31 levels",
        refusal({ loop = cycle }))
    end)
  end)

  describe("dn.file_storage(path)", function()
    local dir
    before_each(function() dir = helpers.tmpdir() end)
    after_each(function() helpers.remove_tree(dir) end)

    it("raises at once when the folder does not exist", function()
      assert.equals("dukanext: file_storage: the folder '" .. dir .. "/nope' of '" .. dir
        .. "/nope/ids.json' does not exist", raised(dn.file_storage, dir .. "/nope/ids.json"))
    end)

    it("raises at once when the folder is a file", function()
      local f = assert(io.open(dir .. "/file", "w"))
      f:close()
      assert.equals("dukanext: file_storage: '" .. dir .. "/file' (the folder of '" .. dir
        .. "/file/ids.json') is not a folder", raised(dn.file_storage, dir .. "/file/ids.json"))
    end)

    it("raises at once when the folder is not writable", function()
      local ro = dir .. "/ro"
      assert(os.execute("mkdir " .. helpers.quote(ro)))
      -- Root ignores modes: it gets a read-only tmpfs there, or the immutable attribute.
      local undo
      if helpers.shell("id -u") ~= "0" then
        os.execute("chmod 0500 " .. helpers.quote(ro))
        undo = function() os.execute("chmod 0700 " .. helpers.quote(ro)) end
      elseif helpers.shell("mount -t tmpfs -o ro,size=16k tmpfs " .. helpers.quote(ro)
          .. " 2>/dev/null; echo $?") == "0" then
        undo = function() os.execute("umount " .. helpers.quote(ro)) end
      elseif helpers.shell("chattr +i " .. helpers.quote(ro) .. " 2>/dev/null; echo $?") == "0" then
        undo = function() os.execute("chattr -i " .. helpers.quote(ro)) end
      end
      assert(undo, "no way to make a folder read-only here")
      finally(undo)
      assert.matches("^dukanext: file_storage: the folder '" .. ro:gsub("%p", "%%%0") .. "' of '.*/ro/ids%.json' "
        .. "is not writable: ", raised(dn.file_storage, ro .. "/ids.json"))
    end)

    it("in a writable folder works as before", function()
      local st = dn.file_storage(dir .. "/ids.json")
      st.set("k", "v")
      assert.equals("v", st.get("k"))
    end)
  end)
end)
