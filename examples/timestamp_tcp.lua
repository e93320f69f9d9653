-- The timestamp service over TCP: every message a client sends comes back stamped with the
-- server's local time, as "[<date>] <message>" (the date as C's ctime() writes it).
-- Run:  luasrv examples/timestamp_tcp.lua [port]                    (default port 8888)
-- Try:  luasrv examples/timestamp_tcp_client.lua [port] hello world, nc 127.0.0.1 8888, or
--       the socket tutorial's Python client (it sends each input with no newline).
--
-- TCP carries a stream of bytes, not messages: as in the tutorial's server, whatever one read
-- brings is the message. Lines (nc) are stamped one by one and answered with a newline; a
-- message without one is answered without one. For messages that must survive any split or
-- merge on the way, frame them: see examples/framing.lua.
local srv = require "luasrv"

local port = tonumber(arg[1]) or 8888

srv.tcp.listen({ port = port }, function(conn)
  for chunk in function() return conn:read() end do
    local stamp = os.date("%a %b %e %H:%M:%S %Y")
    local after = 1 -- where the text after the last newline starts
    for line, next_pos in chunk:gmatch("([^\n]*)\n()") do
      conn:write(("[%s] %s\n"):format(stamp, (line:gsub("\r$", ""))))
      after = next_pos
    end
    if after <= #chunk then conn:write(("[%s] %s"):format(stamp, chunk:sub(after))) end
  end
end)
