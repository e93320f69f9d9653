-- The timestamp service over TCP: every line a client sends comes back stamped with the
-- server's local time, as "[<date>] <line>".
-- Run:  luasrv examples/timestamp_tcp.lua [port]                    (default port 8888)
-- Try:  luasrv examples/timestamp_tcp_client.lua [port] hello world  or  nc 127.0.0.1 8888
local srv = require "luasrv"

local port = tonumber(arg[1]) or 8888

srv.tcp.listen({ port = port }, function(conn)
  for line in conn:lines() do
    conn:write(("[%s] %s\n"):format(os.date("%c"), line))
  end
end)
