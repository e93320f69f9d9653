-- A streamed response: the body goes out piece by piece (chunked on HTTP/1.1) while the
-- handler sleeps between pieces; other requests are served meanwhile.
-- Run:  luasrv examples/stream.lua [port]          (default 8080)
-- Try:  curl -N http://127.0.0.1:8080/count?to=5
local srv = require "luasrv"

local app = srv.http.app()

app:get("/count", function(req, res)
  local to = math.min(tonumber(req.query.to) or 10, 1000)
  res:header("Content-Type", "text/plain; charset=utf-8")
  for i = 1, to do
    res:write(i, "\n")
    srv.sleep(0.2)
  end
  res:write("done\n")
end)

srv.http.listen({ port = tonumber(arg[1]) or 8080 }, app)
