-- busted helper (.busted): a case that goes pending is an error under ctest unless
-- its spec file declared, with helpers.declare_skip, that this case cannot run on
-- the Lua running the suite. busted itself exits 0 on pending, so a skip would
-- otherwise pass silently. ctest sets DUKANEXT_CTEST=1; by hand, pending stays pending.
local busted = require("busted")

local skips = { declared = {}, strict = (os.getenv("DUKANEXT_CTEST") or "") ~= "" }

-- reason: the exact text the case gives pending(). Only a declaration made while the
-- spec file runs counts, so that one file cannot excuse another's skips.
function skips.declare(reason)
  skips.declared[reason] = true
end

-- busted puts "file:line: " before the text given to pending().
local function text_of(message)
  if type(message) == "table" then message = message.message end
  return (tostring(message or ""):gsub("^[^\n]-:%d+: ", ""))
end

local function file_of(element)
  while element and element.descriptor ~= "file" do element = busted.parent(element) end
  return element
end

-- pending() inside an it: the reason comes as the message of the "pending" event.
local reason_of = setmetatable({}, { __mode = "k" })
busted.subscribe({ "pending" }, function(element, _, message)
  reason_of[element] = text_of(message)
  return nil, true
end)

busted.subscribe({ "file", "start" }, function()
  skips.declared = {}
  return nil, true
end)

local reported = setmetatable({}, { __mode = "k" })
busted.subscribe({ "test", "end" }, function(element, parent, status)
  if status ~= "pending" or not skips.strict or reported[element] then return nil, true end
  reported[element] = true
  -- A pending block (describe-level pending("...")) has its reason as its name.
  local reason = reason_of[element] or element.name or ""
  if not skips.declared[reason] then
    local file = file_of(element)
    busted.publish({ "error", element.descriptor }, element, parent,
      "a skip its spec file does not declare for " .. (jit and jit.version or _VERSION)
        .. " (helpers.declare_skip): " .. reason,
      { short_src = file and file.name or "?", currentline = element.trace and element.trace.currentline or 0,
        traceback = "" })
  end
  return nil, true
end)

package.loaded["spec.support.skips"] = skips
return skips
