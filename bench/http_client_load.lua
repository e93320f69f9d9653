-- The HTTP client under load: `luasrv bench/http_client_load.lua URL SECONDS TASKS` runs TASKS
-- tasks that each GET the URL over and over with srv.http.get (keep-alive connections from the
-- pool) for SECONDS, then prints one line for scripts/bench:
--   CLIENT_RESULT requests=N duration_us=D errors=E connections=C
local srv = require "luasrv"

local url, seconds, tasks = arg[1], tonumber(arg[2]) or 5, tonumber(arg[3]) or 50
assert(url, "usage: http_client_load.lua URL [SECONDS] [TASKS]")
srv.http.pool_configure({ max_idle = tasks }) -- one connection per task, as wrk -cTASKS

local requests, errors, running = 0, 0, tasks
local t0 = srv.monotime()
local deadline = t0 + seconds
for _ = 1, tasks do
  srv.after(0, function()
    while srv.monotime() < deadline do
      local res = srv.http.get(url)
      if res and res.status == 200 then requests = requests + 1 else errors = errors + 1 end
    end
    running = running - 1
    if running == 0 then
      local elapsed = srv.monotime() - t0
      print(("CLIENT_RESULT requests=%d duration_us=%d errors=%d connections=%d"):format(
        requests, math.floor(elapsed * 1e6), errors, srv.http.pool_stats().created))
    end
  end)
end
