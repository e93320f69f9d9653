-- The smallest web app: "hello world" through the router.
-- Run:  luasrv examples/hello_http.lua [port]      (default 8080)
-- Try:  curl http://127.0.0.1:8080/
local srv = require "luasrv"

local app = srv.http.app()

app:get("/", function()
  return "hello world"
end)

srv.http.listen({ port = tonumber(arg[1]) or 8080 }, app)
