-- The luasrv side of the gzip scenario of scripts/bench: GET /20k.html answers a 20 KB HTML
-- page (read once at startup) through compress = { level = 6 }, as nginx's gzip on with
-- gzip_comp_level 6 compresses the same file. The handler is written as users write it: it
-- reads If-None-Match and answers 304 when it carries the page's ETag.
-- Run:  luasrv bench/gzip_app.lua PORT FILE
local srv = require "luasrv"

local port, file = tonumber(arg[1]) or 8080, assert(arg[2], "usage: gzip_app.lua PORT FILE")
local f = assert(io.open(file, "rb"))
local body = f:read("a")
f:close()
local etag = string.format('"%x-1"', #body)
local app = srv.http.app()
app:get("/20k.html", function(req)
  if req.headers["if-none-match"] == etag then
    return 304, { ETag = etag }, ""
  end
  return 200, { ["Content-Type"] = "text/html", ETag = etag }, body
end)
srv.http.listen({ port = port, compress = { level = 6 } }, app)
