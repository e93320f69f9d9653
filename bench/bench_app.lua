-- The luasrv side of two scripts/bench scenarios (hello world is examples/hello_http.lua):
--   GET /users/:id   a route with a path parameter; the table answer goes out as JSON
--   GET /1k.txt      a 1 KiB file, read once at startup and returned from a string
--                    ("cached in Lua": luasrv has no app:static yet, so no file I/O per request)
-- Run:  luasrv bench/bench_app.lua [port [file]]     (default 8080; no file, no /1k.txt route)
-- Try:  curl http://127.0.0.1:8080/users/42
local srv = require "luasrv"

local port, file = tonumber(arg[1]) or 8080, arg[2]
local app = srv.http.app()

app:get("/users/:id", function(req)
  return { id = req.params.id, name = "user" }
end)

if file then
  local f = assert(io.open(file, "rb"))
  local body = f:read("a")
  f:close()
  local headers = { ["Content-Type"] = "text/plain" }
  app:get("/1k.txt", function()
    return 200, headers, body
  end)
end

srv.http.listen({ port = port }, app)
