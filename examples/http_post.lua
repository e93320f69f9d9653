-- POST some data to a URL and print what the server answers.
-- The body goes out with a Content-Length; pass "-" to send standard input instead, streamed
-- in pieces with chunked encoding (a body given as a reader function).
-- Run:  luasrv examples/http_post.lua URL DATA|-
-- Try:  luasrv examples/http_post.lua https://httpbin.org/post 'name=luasrv'
--       echo hello | luasrv examples/http_post.lua http://127.0.0.1:8080/echo -
-- Exits with 1 when the request fails.
local srv = require "luasrv"

local url, data = arg[1], arg[2]
if not url or not data then
  io.stderr:write("usage: http_post.lua URL DATA|-\n")
  os.exit(1)
end

local body = data
if data == "-" then
  body = function() return io.stdin:read(16384) end -- nil at the end of input ends the body
end

local res, err = srv.http.post(url, body, {
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
  timeout = 30,
})
if not res then
  io.stderr:write("http_post: ", err, "\n")
  os.exit(1)
end
print(("%d %s"):format(res.status, res.reason))
io.write(res.body)
if res.body ~= "" and res.body:sub(-1) ~= "\n" then print() end
