-- The luasrv side of several scripts/bench scenarios (hello world is examples/hello_http.lua):
--   GET /users/:id   a route with a path parameter; the table answer goes out as JSON
--   GET /1k.txt      a 1 KiB file, read once at startup and returned from a string
--                    ("cached in Lua": no file I/O per request)
--   GET /hello       "hello world"
--   GET /hello_incr  the same, after srv.shared.incr of a counter (the cost of the shared store)
--   GET /worker      "hello world", counting the requests of each worker in srv.shared
--   GET /workers     those counts, one line "id count" per worker (the balance of --workers)
-- Run:  luasrv bench/bench_app.lua [port [file [static]]]     (default port 8080)
--   file      the file for /1k.txt (no file: no such route)
--   static    serve the file's directory with app:static("/", dir) instead: an open, a read
--             and the file's headers (ETag, Last-Modified) per request, as nginx does
-- Try:  curl http://127.0.0.1:8080/users/42
local srv = require "luasrv"

local port, file, mode = tonumber(arg[1]) or 8080, arg[2], arg[3]
local app = srv.http.app()

app:get("/hello", function() return "hello world" end)
app:get("/hello_incr", function()
  srv.shared.incr("hits")
  return "hello world"
end)
local worker_key = "requests of worker " .. srv.worker.id
app:get("/worker", function()
  srv.shared.incr(worker_key)
  return "hello world"
end)
app:get("/workers", function()
  local lines = {}
  for id = 1, srv.worker.count do
    lines[#lines + 1] = id .. " " .. (srv.shared.get("requests of worker " .. id) or 0)
  end
  return table.concat(lines, "\n") .. "\n"
end)

app:get("/users/:id", function(req)
  return { id = req.params.id, name = "user" }
end)

if file and mode == "static" then
  app:static("/", file:match("^(.*)/[^/]*$") or ".")
elseif file then
  local f = assert(io.open(file, "rb"))
  local body = f:read("a")
  f:close()
  local headers = { ["Content-Type"] = "text/plain" }
  app:get("/1k.txt", function()
    return 200, headers, body
  end)
end

srv.http.listen({ port = port }, app)
