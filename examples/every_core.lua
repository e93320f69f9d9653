-- Every core: run it with several workers and watch which one answers each new connection.
--   build/luasrv --workers 2 examples/every_core.lua     (or --workers auto: one per CPU)
--   for i in 1 2 3 4; do curl -s http://127.0.0.1:8080/; done
-- Lua variables are per worker; srv.shared is one store for all of them, so the request
-- count is the server's, not the worker's. A timer that must run once per server runs in
-- worker 1 only (srv.worker.id is 0 without --workers, hence <= 1).
local srv = require "luasrv"

local app = srv.http.app()
app:get("/", function()
  local total = srv.shared.incr("hits")
  return ("worker %d of %d, request %d\n"):format(srv.worker.id, srv.worker.count, total)
end)
srv.http.listen({ port = tonumber(arg[1]) or 8080 }, app)

if srv.worker.id <= 1 then
  srv.every(60, function()
    srv.log.info("requests so far:", srv.shared.get("hits") or 0)
  end)
end
