-- A small reverse proxy: every request is forwarded to an upstream server and its answer
-- sent back (large or unsized answers streamed through as they arrive). Connections to the
-- upstream are kept alive in srv.http's pool, so a busy proxy opens a few of them and reuses
-- them (see srv.http.pool_stats()).
-- Run:  luasrv examples/proxy.lua UPSTREAM [port]     (default port 8080)
-- Try:  luasrv examples/hello_http.lua 9000 &  luasrv examples/proxy.lua http://127.0.0.1:9000
--       curl http://127.0.0.1:8080/
local srv = require "luasrv"

local upstream = (arg[1] or "http://127.0.0.1:9000"):gsub("/$", "")

-- A proxy has as many requests in flight to the upstream as its clients send it: keep that
-- many connections alive (the default, 16, suits a handler that calls a service now and then).
srv.http.pool_configure({ max_idle = 64 })

-- Hop-by-hop fields (RFC 9110 §7.6.1) belong to one connection and are not forwarded.
local hop_by_hop = { connection = true, ["keep-alive"] = true, ["proxy-connection"] = true,
  te = true, trailer = true, ["transfer-encoding"] = true, upgrade = true,
  ["content-length"] = true, host = true }

-- Fields of the upstream's answer that this server writes itself.
local own = { date = true, server = true }

local app = srv.http.app()

app:any("/*path", function(req, res)
  local headers = {}
  for name, value in pairs(req.headers) do
    if not hop_by_hop[name] then headers[name] = value end
  end
  headers["x-forwarded-for"] = req.peer
  local body
  if req.headers["content-length"] or req.headers["transfer-encoding"] then body = req:body() end
  -- stream: the head first; the body is then sent whole when it is small, else piece by
  -- piece as it arrives (memory stays bounded whatever the upstream sends).
  local answer, err = srv.http.request({
    method = req.method, url = upstream .. req.target, headers = headers, body = body,
    timeout = 30, stream = true,
  })
  if not answer then
    srv.log.warn("proxy: " .. upstream .. req.target .. ": " .. err)
    return res:status(502):send("bad gateway\n")
  end
  res:status(answer.status)
  for name, value in pairs(answer.headers) do
    if name == "set-cookie" then -- the one field that cannot be joined with commas
      for _, cookie in ipairs(answer:header_values(name)) do res:header(name, cookie) end
    elseif not hop_by_hop[name] and not own[name] then
      res:header(name, value)
    end
  end
  local length = tonumber(answer.headers["content-length"])
  if length and length <= 1024 * 1024 then
    local whole, read_err = answer:read("a")
    if not whole then
      srv.log.warn("proxy: " .. upstream .. req.target .. ": " .. read_err)
      return res:status(502):send("bad gateway\n")
    end
    return res:send(whole)
  end
  for piece in answer:chunks() do res:write(piece) end -- a failure midway raises: aborted
end)

srv.http.listen({ port = tonumber(arg[2]) or 8080 }, app)
