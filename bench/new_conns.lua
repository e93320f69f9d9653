-- Opens `total` connections to 127.0.0.1:port, `concurrency` at a time, each sending one
-- "GET path" with Connection: close and reading the whole answer: what scripts/bench's balance
-- scenario spreads over --workers. Prints "new_conns ok=N failed=N seconds=S".
-- Run:  lua5.4 bench/new_conns.lua PORT [TOTAL [CONCURRENCY [PATH]]]   (needs luasrv on
--       LUA_PATH / LUA_CPATH, as scripts/bench sets them)
local srv = require "luasrv"

local port = assert(tonumber(arg[1]), "usage: new_conns.lua PORT [TOTAL [CONCURRENCY [PATH]]]")
local total, concurrency, path = tonumber(arg[2]) or 10000, tonumber(arg[3]) or 50, arg[4] or "/"
local request = ("GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"):format(path)
local ok, failed, left, running = 0, 0, total, concurrency
local started = srv.monotime()

srv.run(function()
  for _ = 1, concurrency do
    srv.after(0, function()
      while left > 0 do
        left = left - 1
        local conn = srv.tcp.connect("127.0.0.1", port, { timeout = 5 })
        local answer = conn and conn:write(request) and conn:read("a")
        if conn then conn:close() end
        if answer and answer:find("^HTTP/1%.1 200 ") then ok = ok + 1 else failed = failed + 1 end
      end
      running = running - 1
    end)
  end
  while running > 0 do srv.sleep(0.01) end
end)
print(("new_conns ok=%d failed=%d seconds=%.2f"):format(ok, failed, srv.monotime() - started))
