-- The luasrv side of the gzip scenario of scripts/bench: GET /20k.html answers a 20 KB HTML
-- page (read once at startup) through compress = { level = 6 }, as nginx's gzip on with
-- gzip_comp_level 6 compresses the same file.
-- Run:  luasrv bench/gzip_app.lua PORT FILE
local srv = require "luasrv"

local port, file = tonumber(arg[1]) or 8080, assert(arg[2], "usage: gzip_app.lua PORT FILE")
local f = assert(io.open(file, "rb"))
local body = f:read("a")
f:close()
local headers = { ["Content-Type"] = "text/html" }
local app = srv.http.app()
app:get("/20k.html", function() return 200, headers, body end)
srv.http.listen({ port = port, compress = { level = 6 } }, app)
