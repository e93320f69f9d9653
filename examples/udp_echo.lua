-- UDP echo: every datagram goes straight back to its sender, unchanged.
-- Run:  luasrv examples/udp_echo.lua [port [host]]     (default port 7777, host 127.0.0.1)
-- Try:  nc -u 127.0.0.1 7777
-- Each datagram runs the handler in its own coroutine; `peer` is the sender's address, which
-- sock:send takes back as the destination.
local srv = require "luasrv"

local port = tonumber(arg[1]) or 7777
local host = arg[2] or "127.0.0.1"

srv.udp.listen({ host = host, port = port }, function(data, peer, sock)
  sock:send(data, peer)
end)
