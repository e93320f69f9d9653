-- Hot reload latency: how long from saving a file to the new code answering.
-- Copies examples/router.lua into a temporary directory, runs `luasrv --reload router.lua PORT`
-- there, then TRIALS times rewrites the /index page's text (in place, as an editor's save) and
-- polls GET /index every 2 ms on a new connection until the new text comes back. Prints each
-- trial and the median, mean, min and max.
-- Run:  build/luasrv bench/reload_latency.lua [trials] [luasrv binary]
--       (the binary defaults to the one running this script)
local srv = require "luasrv"

local trials = tonumber(arg[1]) or 20
local POLL = 0.002

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- The binary running this script is the first word of the command line.
local bin = arg[2]
if not bin then
  local i = 0
  while arg[i - 1] ~= nil do i = i - 1 end
  bin = arg[i]
end
if not bin:find("/", 1, true) then
  local p = assert(io.popen("command -v " .. quote(bin)))
  bin = p:read("l") or bin
  p:close()
end
local abs = assert(io.popen("readlink -f " .. quote(bin)))
bin = abs:read("l")
abs:close()

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end
local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local original = read(here .. "/../examples/router.lua")
local marker = "<p>This is the index page.</p>"
assert(original:find(marker, 1, true), "examples/router.lua has no index page text to change")

-- A port that was free a moment ago.
local probe = srv.tcp.listen({ port = 0 }, function() end)
local _, port = probe:address()
probe:close()

local tmpf = assert(io.popen("mktemp -d"))
local dir = tmpf:read("l")
tmpf:close()
local file = dir .. "/router.lua"
write(file, original)

local proc = assert(io.popen(("cd %s && echo $$ && exec %s --reload --quiet router.lua %d >/dev/null 2>%s")
  :format(quote(dir), quote(bin), port, quote(dir .. "/stderr")), "r"))
local pid = assert(tonumber(proc:read("l")))

-- Stops the server; returns how it ended ("exit N" or "signal N", e.g. a crash before the
-- TERM) and its stderr.
local function stop()
  local stat = io.open("/proc/" .. pid .. "/stat")
  local state = stat and stat:read("a"):match("^%d+ %b() (%a)")
  if stat then stat:close() end
  os.execute("kill -TERM " .. pid .. " 2>/dev/null")
  local _, how, code = proc:close()
  local err = read(dir .. "/stderr")
  os.execute("rm -rf " .. quote(dir))
  local ended = (state == nil or state == "Z") and " (it had ended before it was stopped)" or ""
  return ("%s %s%s"):format(how, tostring(code), ended), err
end

-- GET /index on a new connection: the body, or nil.
local function get_index()
  local conn = srv.tcp.connect("127.0.0.1", port, { timeout = 1 })
  if not conn then return nil end
  conn:settimeout(1)
  conn:write("GET /index HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
  local parts = {}
  while true do
    local data = conn:read()
    if not data then break end
    parts[#parts + 1] = data
  end
  conn:close()
  return (table.concat(parts):match("\r\n\r\n(.*)$"))
end

-- Wait for the server to answer.
local deadline = srv.monotime() + 10
while not get_index() do
  if srv.monotime() > deadline then
    local status, err = stop()
    error(("luasrv did not start (%s)\n%s"):format(status, err))
  end
  srv.sleep(0.01)
end

local times = {}
for t = 1, trials do
  local text = ("<p>Reload trial %d.</p>"):format(t)
  local page = original:gsub(marker:gsub("%p", "%%%0"), text)
  srv.sleep(0.1) -- let the previous reload settle
  local t0 = srv.monotime()
  write(file, page)
  local took
  while true do
    local body = get_index()
    if body and body:find(text, 1, true) then
      took = srv.monotime() - t0
      break
    end
    if srv.monotime() - t0 > 5 then
      local status, err = stop()
      error(("trial %d: the new text did not appear within 5 s; luasrv: %s\n%s"):format(t, status,
        err:sub(-2000)))
    end
    srv.sleep(POLL)
  end
  times[#times + 1] = took
  print(("trial %2d: %.1f ms"):format(t, took * 1000))
end
stop()

table.sort(times)
local n = #times
local median = n % 2 == 1 and times[(n + 1) // 2] or (times[n // 2] + times[n // 2 + 1]) / 2
local sum = 0
for _, v in ipairs(times) do sum = sum + v end
print(("reload latency over %d trials: median %.1f ms, mean %.1f ms, min %.1f ms, max %.1f ms")
  :format(n, median * 1000, sum / n * 1000, times[1] * 1000, times[n] * 1000))
