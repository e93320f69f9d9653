-- The HTTPS benchmark app (scripts/bench, scenarios https and tls_new): the hello handler of
-- bench/bench_app.lua (GET /: it reads the Host header and the method), over TLS.
-- luasrv https_app.lua PORT CERT KEY [full]; "full" turns session resumption off, so that every
-- new connection is a full handshake.
local srv = require "luasrv"

local port, cert, key, full = tonumber(arg[1]), arg[2], arg[3], arg[4] == "full"
local app = srv.http.app()
app:get("/", function(req)
  local host = req.headers.host or "unknown"
  return 200, { ["Content-Type"] = "text/plain" }, "Hello from " .. host .. " (" .. req.method .. ")\n"
end)
srv.http.listen({ port = port, tls = { cert = cert, key = key, resumption = not full } }, app)
