-- The classic echo session, on one event loop instead of a thread per client.
-- Run:  luasrv examples/echo.lua [port]        (default port 9999)
-- Try:  luasrv examples/echo_client.lua [port]  or  nc 127.0.0.1 9999
-- The server greets with "Welcome!", answers each line with "Hello, <line>!" and closes the
-- connection on "exit". Each client runs in its own coroutine; none can block another.
local srv = require "luasrv"

local port = tonumber(arg[1]) or 9999

srv.tcp.listen({ port = port }, function(conn)
  conn:write("Welcome!\n")
  for line in conn:lines() do
    if line == "exit" then break end
    conn:write("Hello, ", line, "!\n")
  end
end)
