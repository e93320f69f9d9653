-- The timestamp service over UDP: every datagram comes back stamped with the server's local
-- time, as "[<date>] <data>".
-- Run:  luasrv examples/timestamp_udp.lua [port [host]]      (default port 8888, 127.0.0.1)
-- Try:  luasrv examples/timestamp_udp_client.lua [port] hello world  or  nc -u 127.0.0.1 8888
local srv = require "luasrv"

local port = tonumber(arg[1]) or 8888
local host = arg[2] or "127.0.0.1"

srv.udp.listen({ host = host, port = port }, function(data, peer, sock)
  sock:send(("[%s] %s"):format(os.date("%c"), data), peer)
end)
