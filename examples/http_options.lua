-- Ask a server which methods a URL allows: an OPTIONS request, then its Allow header.
-- Run:  luasrv examples/http_options.lua URL
-- Try:  luasrv examples/http_options.lua http://127.0.0.1:8080/
-- Prints the Allow value (or "(no Allow header)"); exits with 1 when the request fails.
local srv = require "luasrv"

local url = arg[1]
if not url then
  io.stderr:write("usage: http_options.lua URL\n")
  os.exit(1)
end

local res, err = srv.http.request({ method = "OPTIONS", url = url, timeout = 30 })
if not res then
  io.stderr:write("http_options: ", err, "\n")
  os.exit(1)
end
print(("%d %s"):format(res.status, res.reason))
print("Allow: " .. (res.headers.allow or "(no Allow header)"))
