-- What the OpenResty specs share: the LuaJIT build that nginx hosts, and nginx
-- started from README's own OpenResty snippet (README.md, "On OpenResty"), with
-- the spec's locations added around it. Driven with curl and cookie jars.
local helpers = require("spec.helpers")

if not package.path:find("./lua/?.lua", 1, true) then
  package.path = "./lua/?.lua;" .. package.path
end
local launch = require("examples.openresty.launch")

local M = { launch = launch }

-- nginx needs the LuaJIT build: $DUKANEXT_LUAJIT_CPATH, else the one beside the
-- module under test (ctest points DUKANEXT_CPATH at build/?.so, build/asan/?.so,
-- build/lua-5.x/?.so or build/lua-luajit/?.so), else build/lua-luajit/?.so.
function M.luajit_cpath()
  local explicit = os.getenv("DUKANEXT_LUAJIT_CPATH")
  if explicit and explicit ~= "" then return explicit end
  local candidates = {}
  local under_test = os.getenv("DUKANEXT_CPATH")
  if under_test then
    local dir = under_test:match("^(.*)/%?%.so$")
    if dir then
      if dir:find("lua%-luajit$") then candidates[#candidates + 1] = under_test end
      candidates[#candidates + 1] = dir .. "/lua-luajit/?.so"
      candidates[#candidates + 1] = (dir:match("^(.*)/[^/]+$") or ".") .. "/lua-luajit/?.so"
    end
  end
  candidates[#candidates + 1] = launch.luajit_cpath()
  for _, c in ipairs(candidates) do
    if helpers.read_file((c:gsub("%?", "dukanext"))) then return c end
  end
end

-- nginx always hosts the LuaJIT build, whatever runs busted: the specs that start
-- it run once, with the LuaJIT suite (DUKANEXT_OPENRESTY=1 runs them anywhere).
function M.runs_here()
  return jit ~= nil or os.getenv("DUKANEXT_OPENRESTY") == "1"
end

-- The first ```nginx block of README's "On OpenResty" section.
function M.readme_snippet()
  local readme = assert(helpers.read_file("README.md"), "README.md not found (run from the repo)")
  local section = assert(readme:match("\n### On OpenResty\n(.-)\n##"), "README has no On OpenResty section")
  return assert(section:match("```nginx\n(.-)```"), "README's On OpenResty section has no nginx block")
end

-- The first and last index of `name { ... }` in text, braces balanced.
local function block_span(text, name, init)
  local first, open = text:find(name .. "%s*{", init)
  if not first then return nil end
  local depth = 0
  for i = open, #text do
    local ch = text:sub(i, i)
    if ch == "{" then
      depth = depth + 1
    elseif ch == "}" then
      depth = depth - 1
      if depth == 0 then return first, i end
    end
  end
  error("unbalanced braces after " .. name)
end

-- The text of `name { ... }` in text (the first one after `after`, if given).
function M.block(text, name, after)
  local init = after and assert(text:find(after, 1, true), after .. " not found") or 1
  local first, last = block_span(text, name, init)
  assert(first, name .. " not found")
  return text:sub(first, last)
end

-- The access_by_lua block of the snippet's `location /`, for the spec's other
-- locations: what README tells a user to put in each location that shows a page.
function M.page_view_block(snippet)
  return M.block(snippet, "access_by_lua_block", "location / {")
end

local function replace_once(text, pattern, replacement)
  local out, n = text:gsub(pattern, function() return replacement end)
  assert(n == 1, ("README's snippet: expected one match of %q, found %d"):format(pattern, n))
  return out
end

local COMMON = [[
load_module {{modules_dir}}/ndk_http_module.so;
load_module {{modules_dir}}/ngx_http_lua_module.so;

{{user}}
daemon on;
master_process on;
worker_processes {{workers}};
pid {{prefix}}/nginx.pid;
error_log {{prefix}}/logs/error.log warn;

events {
  worker_connections 1024;
}

http {
  server_tokens off;
  default_type text/html;
  access_log off;
  client_body_temp_path {{prefix}}/tmp/client_body;
  proxy_temp_path {{prefix}}/tmp/proxy;
  fastcgi_temp_path {{prefix}}/tmp/fastcgi;
  uwsgi_temp_path {{prefix}}/tmp/uwsgi;
  scgi_temp_path {{prefix}}/tmp/scgi;

]]

-- A configuration template (launch.lua's placeholders) made of README's snippet with
-- the checkout's paths, the collector as endpoint and these additions:
--   worker_options  Lua text added to the table given to dnx.init_worker
--   init            Lua code replacing the snippet's init_by_lua_block body
--   http            directives added at http level
--   server          directives added to the snippet's server block (a listen, a root
--                   at <prefix>/html and /_ready are always there)
--   edit            function(snippet) -> snippet, for anything else
function M.template(opts)
  opts = opts or {}
  local snippet = M.readme_snippet()
  snippet = replace_once(snippet, 'lua_package_path%s+"[^"]*"', 'lua_package_path "{{repo}}/lua/?.lua;;"')
  snippet = replace_once(snippet, 'lua_package_cpath%s+"[^"]*"', 'lua_package_cpath "{{cpath}};;"')
  snippet = replace_once(snippet, 'endpoint = "[^"]*",?',
    'endpoint = "{{endpoint}}", ' .. (opts.worker_options or ""))
  if opts.init then
    local first, last = block_span(snippet, "init_by_lua_block")
    assert(first, "README's snippet has no init_by_lua_block")
    snippet = snippet:sub(1, first - 1) .. "init_by_lua_block {\n" .. opts.init .. "\n}"
      .. snippet:sub(last + 1)
  end
  snippet = replace_once(snippet, "server {", "server {\n    listen {{listen}};\n"
    .. "    root {{prefix}}/html;\n    location = /_ready { return 204; }\n"
    .. (opts.server or "") .. "\n")
  if opts.edit then snippet = opts.edit(snippet) end
  return COMMON .. (opts.http or "") .. "\n" .. snippet .. "\n}\n"
end

-- Starts nginx from M.template(opts) against opts.endpoint with opts.workers (1)
-- workers, and writes opts.files ({ ["index.html"] = "..." }) under its root.
-- Answers launch.lua's storefront object.
function M.start(opts)
  local cpath = assert(M.luajit_cpath(), "needs the LuaJIT build of the module"
    .. " (cmake -DDUKANEXT_ALL_LUAS=ON, or DUKANEXT_LUAJIT_CPATH)")
  local shop = launch.start({
    endpoint = opts.endpoint,
    workers = opts.workers or 1,
    cpath = cpath,
    template = M.template(opts),
    ready_path = "/_ready",
  })
  local root = shop.prefix .. "/html"
  assert(launch.run("mkdir -p " .. helpers.quote(root)))
  for name, text in pairs(opts.files or {}) do
    local f = assert(io.open(root .. "/" .. name, "wb"))
    f:write(text)
    f:close()
  end
  return shop
end

local fetches = 0

-- GET path with curl, keeping cookies in the jar file `jar` (nil: none). opts:
-- user_agent, headers (a list of "Name: value"). Answers { status, body,
-- cookies = the Set-Cookie values, headers = { [lower-case name] = { values } } }.
function M.get(shop, jar, path, opts)
  opts = opts or {}
  fetches = fetches + 1
  local base = os.tmpname()
  local headers_file, body_file = base .. ".h" .. fetches, base .. ".b" .. fetches
  local words = { "curl -s -o", helpers.quote(body_file), "-D", helpers.quote(headers_file),
    "-w '%{http_code}'", "-A", helpers.quote(opts.user_agent or "Mozilla/5.0 (spec)") }
  if jar then
    words[#words + 1] = "-b " .. helpers.quote(jar) .. " -c " .. helpers.quote(jar)
  end
  for _, h in ipairs(opts.headers or {}) do words[#words + 1] = "-H " .. helpers.quote(h) end
  words[#words + 1] = helpers.quote(shop:url(path))
  local _, out = launch.run(table.concat(words, " "))
  local answer = { status = tonumber(out:match("(%d%d%d)%s*$")), cookies = {}, headers = {},
    body = helpers.read_file(body_file) or "" }
  for line in (helpers.read_file(headers_file) or ""):gmatch("[^\r\n]+") do
    local name, value = line:match("^([%w%-]+):%s*(.*)$")
    if name then
      name = name:lower()
      answer.headers[name] = answer.headers[name] or {}
      table.insert(answer.headers[name], value)
      if name == "set-cookie" then answer.cookies[#answer.cookies + 1] = value end
    end
  end
  os.remove(base)
  os.remove(headers_file)
  os.remove(body_file)
  return answer
end

-- The value of the cookie `name` among Set-Cookie lines, and how many lines set it.
function M.cookie(lines, name)
  local value, count = nil, 0
  for _, line in ipairs(lines) do
    local v = line:match("^" .. name:gsub("%p", "%%%0") .. "=([^;]*)")
    if v then
      value, count = v, count + 1
    end
  end
  return value, count
end

function M.url_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The events at the collector once `n` have arrived (within a loose bound), after a
-- short pause in which any extra one (a duplicate) would arrive too.
function M.settled_events(collector, n)
  collector:wait_events(n, helpers.within(10))
  helpers.sleep(0.5)
  return collector:events()
end

return M
