-- The luasrv side of the HTTP scenarios of scripts/bench, written as users write handlers: each
-- takes `req`, reads from it, and returns status, headers and body, or a table for JSON. The
-- other peers (nginx, nginx + Lua, bench/node_app.js, bench/ref_http.c) answer the same bytes
-- (see docs/benchmarks.md). The smallest handler, `function() return "hello world" end`, is
-- examples/hello_http.lua (scenario smallest).
--   GET /            hello, pipelined, c200, idle, workers: "Hello from <Host> (<method>)\n",
--                    text/plain (wrk sends "Host: 127.0.0.1:PORT", so 33 bytes for any
--                    5-digit port)
--   GET /users/:id   json: a route parameter and the query, answered as a table (JSON):
--                    /users/42?fields=name gives {"fields":"name","id":"42","name":"user"}
--   GET /1k.txt      static: a 1 KiB file (any file given: GET /<its name>), read once at
--                    startup and returned from a string ("cached in Lua": no file I/O per
--                    request), with an ETag; a request whose If-None-Match carries that ETag
--                    gets a 304
--   GET /20k.html    gzip: the same for a 20 KB page (text/html), compressed for clients that
--                    ask by compress = { level = 6 }, as nginx's gzip on with gzip_comp_level 6
--   GET /hello       "hello world" (shared_incr)
--   GET /hello_incr  the same, after srv.shared.incr of a counter (the cost of the shared store)
--   GET /worker      "hello world", counting the requests of each worker in srv.shared (balance)
--   GET /workers     those counts, one line "id count" per worker (the balance of --workers)
-- Run:  luasrv bench/bench_app.lua [port [file [static|gzip]]]     (default port 8080)
--   file      the file for GET /<its name> (no file: no such route)
--   static    serve the file's directory with app:static("/", dir) instead: an open, a read
--             and the file's headers (ETag, Last-Modified) per request, as nginx does
--   gzip      compress answers (compress = { level = 6 })
-- Try:  curl http://127.0.0.1:8080/users/42?fields=name
local srv = require "luasrv"

local port, file, mode = tonumber(arg[1]) or 8080, arg[2], arg[3]
local app = srv.http.app()

app:get("/", function(req)
  local host = req.headers.host or "unknown"
  return 200, { ["Content-Type"] = "text/plain" }, "Hello from " .. host .. " (" .. req.method .. ")\n"
end)

app:get("/users/:id", function(req)
  return { id = req.params.id, name = "user", fields = req.query.fields }
end)

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

if file and mode == "static" then
  app:static("/", file:match("^(.*)/[^/]*$") or ".")
elseif file then
  local f = assert(io.open(file, "rb"))
  local body = f:read("a")
  f:close()
  local etag = string.format('"%x-1"', #body)
  local name = file:match("[^/]*$")
  local content_type = name:match("%.html$") and "text/html" or "text/plain"
  app:get("/" .. name, function(req)
    if req.headers["if-none-match"] == etag then
      return 304, { ETag = etag }, ""
    end
    return 200, { ["Content-Type"] = content_type, ETag = etag }, body
  end)
end

srv.http.listen({ port = port, compress = mode == "gzip" and { level = 6 } or nil }, app)
