-- An HTTP client in a few lines: GET a URL, print the response head, save the body.
-- srv.http.get follows the protocol for you (chunked bodies, keep-alive, HTTPS, redirects
-- when asked); compare raw_http_get.lua, which writes the same request by hand.
-- Run:  luasrv examples/http_get.lua URL [FILE]
-- Try:  luasrv examples/http_get.lua https://example.com/ page.html
-- Exits with 1 when the request fails; any HTTP status counts as success.
local srv = require "luasrv"

local url, file = arg[1], arg[2]
if not url then
  io.stderr:write("usage: http_get.lua URL [FILE]\n")
  os.exit(1)
end

local res, err = srv.http.get(url, { redirects = 5, timeout = 30 })
if not res then
  io.stderr:write("http_get: ", err, "\n")
  os.exit(1)
end

-- The head: the status line, then each header field as it came.
print(("HTTP/%s %d %s"):format(res.version, res.status, res.reason))
local names = {}
for name in pairs(res.headers) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do
  for _, value in ipairs(res:header_values(name)) do print(name .. ": " .. value) end
end
print()

if file then
  local out = assert(io.open(file, "wb"))
  out:write(res.body)
  out:close()
  print(("body: %d bytes saved to %s"):format(#res.body, file))
else
  print(("body: %d bytes"):format(#res.body))
end
