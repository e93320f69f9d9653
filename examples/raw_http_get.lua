-- HTTP by hand: a raw TCP client that sends an HTTP/1.1 GET with "Connection: close", reads
-- the response until the server closes, splits the head from the body at the first blank
-- line, prints the head and saves the body to FILE (or, without one, prints its size).
-- It shows what HTTP is on the wire; a real client also follows redirects and decodes
-- chunked bodies (this one saves the body exactly as it arrived). This is the by-hand
-- version of examples/http_get.lua, which does the same with srv.http.get.
-- Run:  luasrv examples/raw_http_get.lua URL [FILE]
-- Try:  luasrv examples/raw_http_get.lua http://example.com/ page.html
-- Only http:// URLs. Exits with 1 when the URL is bad, the connection fails or the answer
-- is not HTTP; any HTTP status counts as success.
local srv = require "luasrv"

local function fail(message)
  io.stderr:write("raw_http_get: ", message, "\n")
  os.exit(1)
end

-- Splits "http://host[:port][/path][?query][#fragment]" into host, port and the request
-- target (path and query: the fragment never leaves the client).
local function parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then fail("not a URL: " .. url) end
  if scheme:lower() ~= "http" then
    fail(("only http:// URLs are supported, not %s://"):format(scheme))
  end
  local authority, target = rest:match("^([^/?#]*)([^#]*)")
  local host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$") -- [IPv6 literal]
  if not host then host, port = authority:match("^([%w.-]+):?(%d*)$") end
  if not host then fail("bad host or port in " .. url) end
  port = tonumber(port) or 80
  if port < 1 or port > 65535 then fail("port out of range in " .. url) end
  if not target:find("^/") then target = "/" .. target end
  return host, port, target
end

local url, file = arg[1], arg[2]
if not url then fail("usage: raw_http_get.lua URL [FILE]") end
local host, port, target = parse_url(url)

local conn, err = srv.tcp.connect(host, port, { timeout = 10 })
if not conn then fail(("cannot connect to %s port %d: %s"):format(host, port, err)) end
conn:settimeout(30)

local host_header = host:find(":", 1, true) and "[" .. host .. "]" or host
if port ~= 80 then host_header = host_header .. ":" .. port end
conn:write("GET ", target, " HTTP/1.1\r\n",
           "Host: ", host_header, "\r\n",
           "User-Agent: luasrv-raw-http-get\r\n",
           "Accept: */*\r\n",
           "Connection: close\r\n",
           "\r\n")

-- "Connection: close" makes the end of the stream the end of the response.
local response, read_err = conn:read("a")
conn:close()
if not response then fail("reading the response: " .. read_err) end

local head_end = response:find("\r\n\r\n", 1, true)
if not head_end or not response:find("^HTTP/%d") then
  fail(("not an HTTP response (%d bytes, no blank line after a status line)"):format(#response))
end
local head, body = response:sub(1, head_end - 1), response:sub(head_end + 4)
print((head:gsub("\r\n", "\n")))
print()
if file then
  local out, open_err = io.open(file, "wb")
  if not out then fail(open_err) end
  out:write(body)
  out:close()
  print(("body: %d bytes saved to %s"):format(#body, file))
else
  print(("body: %d bytes"):format(#body))
end
