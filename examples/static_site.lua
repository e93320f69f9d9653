-- A static web site: examples/public/ served at / with its index page, a stylesheet and a
-- custom 404 page. Files get ETag, Last-Modified, Range and HEAD support, and a Cache-Control
-- of one minute.
-- Run:  luasrv examples/static_site.lua [port]     (default 8080)
-- Try:  open http://127.0.0.1:8080/ in a browser
--       curl -i http://127.0.0.1:8080/style.css
--       curl -i http://127.0.0.1:8080/missing      (status 404, the custom page)
--       curl -i -H 'Range: bytes=0-9' http://127.0.0.1:8080/style.css
local srv = require "luasrv"

-- The site lives next to this script, wherever it is started from.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local app = srv.http.app()

-- Routes win over files: this one answers even if public/ had a file called "health".
app:get("/health", function() return { ok = true } end)

app:static("/", here .. "/public", { not_found = "404.html", max_age = 60 })

srv.http.listen({ port = tonumber(arg[1]) or 8080 }, app)
