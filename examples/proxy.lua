-- A small reverse proxy: every request is forwarded to an upstream server and its answer sent
-- back as it arrives (srv.http.proxy: the relay runs in the core, so an answer of any size
-- streams through in bounded memory). Connections to the upstream are kept alive in srv.http's
-- pool, so a busy proxy opens a few of them and reuses them (see srv.http.pool_stats()).
-- Run:  luasrv examples/proxy.lua UPSTREAM [port]     (default port 8080)
-- Try:  luasrv examples/hello_http.lua 9000 &  luasrv examples/proxy.lua http://127.0.0.1:9000
--       curl http://127.0.0.1:8080/
local srv = require "luasrv"

local upstream = arg[1] or "http://127.0.0.1:9000"

-- A proxy has as many requests in flight to the upstream as its clients send it: keep that
-- many connections alive (the default, 16, suits a handler that calls a service now and then).
srv.http.pool_configure({ max_idle = 64 })

-- The upstream learns the client's address from X-Forwarded-For (appended to one that came).
local options = { forwarded_for = true }

srv.http.listen({ port = tonumber(arg[2]) or 8080 }, function(req, res)
  local ok, err, code = srv.http.proxy(req, res, upstream, options)
  if not ok then
    if code == "ECLOSED" then return end -- the client went away: nobody to answer
    srv.log.warn("proxy: " .. upstream .. req.target .. ": " .. err)
    if code == "ETIMEDOUT" then return res:status(504):send("gateway timeout\n") end
    return res:status(502):send("bad gateway\n")
  end
end)
