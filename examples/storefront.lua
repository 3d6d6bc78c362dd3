-- A storefront visit, as server-side shop logic would report it: landing from a
-- search engine, browsing, adding to the cart, logging in and starting checkout.
--
--   lua5.4 examples/storefront.lua http://127.0.0.1:8080/access/api/v1/analytics
--
-- require finds the module once installed (cmake --install); from a build tree, put
-- it on the path: LUA_CPATH="build/?.so;;" lua5.4 examples/...
--
-- Runs against any endpoint; examples/demo.lua runs it against the bundled collector.
local dn = require("dukanext")

local endpoint = arg and arg[1] or os.getenv("DUKANEXT_ENDPOINT")
assert(endpoint, "usage: storefront.lua <endpoint url>")

local failures = {}
dn.configure({
  endpoint = endpoint,
  on_error = function(err)
    failures[#failures + 1] = err
    io.stderr:write(("analytics: %s failed: %s (%s)\n"):format(
      tostring(err.event), err.code, err.message or ""))
  end,
})

-- One visitor: the storage is the visitor's cookie jar on a real server; here the
-- default in-memory storage plays that part.
local function page_view(url, referrer)
  assert(dn.emit("page_view", { url = url }, { referrerUrl = referrer }))
end

page_view("/", "https://www.google.com/search?q=running+shoes")
page_view("/collections/running")
page_view("/products/trail-runner-3")
assert(dn.emit("add_to_cart", {
  url = "/products/trail-runner-3",
  productId = "prod_8812",
  variant = "42 EU",
  quantity = 1,
  price = 129.90,
  currency = "EUR",
}))
page_view("/cart")

-- The visitor logs in: from now on events carry the customer's id.
dn.identify("64f1c2a9e4b0d3a1f2c3b4d5")
page_view("/account/login")
assert(dn.emit("checkout_start", { url = "/checkout", cartValue = 129.90, items = 1 }))

-- A server pumps from a timer and a game once per frame; a script that is about to
-- exit waits for delivery instead, with a deadline.
local ok, err, pending = dn.flush(10)
if not ok then
  io.stderr:write(("analytics: %s, %d events undelivered\n"):format(err, pending))
end

print(("visitor %s, session %s"):format(dn.get_user_id(), dn.get_session_id()))
local stats = dn.stats()
print(("stats: sent=%d failed=%d queued=%d in_flight=%d dropped=%d retries=%d"):format(
  stats.sent, stats.failed, stats.queued, stats.in_flight, stats.dropped, stats.retries))
return #failures == 0 and ok
