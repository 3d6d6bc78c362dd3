-- A small SVG line chart of how auto's limit moved during a run, from the series
-- bench/wan.lua writes ("seconds in_flight_limit in_flight latency_ms" per line).
--   lua5.4 bench/svg.lua SERIES OUT.svg "title"
local series, out, title = arg[1], arg[2], arg[3] or ""
local points = {}
for line in io.lines(series) do
  local t, limit, in_flight, latency = line:match("^(%S+) (%S+) (%S+) (%S+)")
  if t then
    points[#points + 1] = { tonumber(t), tonumber(limit), tonumber(in_flight), tonumber(latency) }
  end
end
assert(#points > 1, "svg: no series in " .. series)

local W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 300, 50, 60, 30, 40
local t_max, y_max, ms_max = points[#points][1], 0, 0
for _, p in ipairs(points) do
  y_max = math.max(y_max, p[2], p[3])
  ms_max = math.max(ms_max, p[4])
end
y_max = math.max(16, math.ceil(y_max / 32) * 32)
ms_max = math.max(10, math.ceil(ms_max / 50) * 50)
local function x(t) return LEFT + (W - LEFT - RIGHT) * t / t_max end
local function y(v, top) return H - BOTTOM - (H - TOP - BOTTOM) * v / top end

local function polyline(column, top, colour, dash)
  local xy = {}
  for _, p in ipairs(points) do xy[#xy + 1] = string.format("%.1f,%.1f", x(p[1]), y(p[column], top)) end
  return string.format('<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>\n', colour,
    dash and ' stroke-dasharray="4 3"' or "", table.concat(xy, " "))
end

local f = assert(io.open(out, "w"))
f:write(string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
  .. 'font-family="sans-serif" font-size="12">\n', W, H))
f:write(string.format('<rect width="%d" height="%d" fill="white"/>\n', W, H))
f:write(string.format('<text x="%d" y="18">%s</text>\n', LEFT, title))
-- Axes and ticks.
f:write(string.format('<path d="M%d %d V%d H%d" stroke="black" fill="none"/>\n', LEFT, TOP, H - BOTTOM,
  W - RIGHT))
for i = 0, 4 do
  local v = y_max * i / 4
  f:write(string.format('<text x="%d" y="%.1f" text-anchor="end">%d</text>\n', LEFT - 4, y(v, y_max) + 4, v))
  f:write(string.format('<text x="%d" y="%.1f">%d ms</text>\n', W - RIGHT + 4, y(ms_max * i / 4, ms_max) + 4,
    ms_max * i / 4))
end
for s = 0, math.floor(t_max) do
  f:write(string.format('<text x="%.1f" y="%d" text-anchor="middle">%d</text>\n', x(s), H - BOTTOM + 16, s))
end
f:write(string.format('<text x="%d" y="%d" text-anchor="middle">seconds</text>\n', (W - RIGHT + LEFT) // 2,
  H - 6))
f:write(polyline(2, y_max, "#1f77b4"))
f:write(polyline(3, y_max, "#2ca02c", true))
f:write(polyline(4, ms_max, "#d62728"))
f:write(string.format('<text x="%d" y="%d" fill="#1f77b4">in_flight_limit</text>\n', LEFT + 10, TOP + 14))
f:write(string.format('<text x="%d" y="%d" fill="#2ca02c">in flight</text>\n', LEFT + 130, TOP + 14))
f:write(string.format('<text x="%d" y="%d" fill="#d62728">latency_ms (right axis)</text>\n', LEFT + 220,
  TOP + 14))
f:write("</svg>\n")
f:close()
