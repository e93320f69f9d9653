-- The classic echo session, on one event loop instead of a thread per client.
-- Run:  luasrv examples/echo.lua [port]        (default port 9999)
-- Try:  luasrv examples/echo_client.lua [port], nc 127.0.0.1 9999, or the socket tutorial's
--       Python client (s.send(b'Michael'); print(s.recv(1024).decode())).
-- The server greets with "Welcome!", answers each message with "Hello, <message>!" and closes
-- the connection on "exit". Each client runs in its own coroutine; none can block another.
--
-- TCP carries a stream of bytes, not messages. Like the tutorial's server, this one takes
-- whatever one read brings as the client's message(s): a line-based client (nc) gets one
-- answer per line, ending in a newline; a client that sends "Michael" with no newline gets
-- "Hello, Michael!" with none. That works while the client waits for each answer before it
-- sends again; for messages that must survive any split or merge on the way, frame them:
-- see examples/framing.lua.
local srv = require "luasrv"

local port = tonumber(arg[1]) or 9999

local find, sub, byte = string.find, string.sub, string.byte

-- Calls fn(text, ending) for each line of a chunk (ending "\n", a "\r" before it dropped) and
-- for a last piece without a newline (ending ""). Stops when fn returns false.
local function messages(chunk, fn)
  local pos = 1
  while true do
    local nl = find(chunk, "\n", pos, true)
    if not nl then break end
    local last = nl - 1
    if last >= pos and byte(chunk, last) == 13 then last = last - 1 end -- "\r\n"
    if fn(sub(chunk, pos, last), "\n") == false then return false end
    pos = nl + 1
  end
  if pos <= #chunk then return fn(sub(chunk, pos), "") end
end

srv.tcp.listen({ port = port }, function(conn)
  conn:write("Welcome!")
  for chunk in function() return conn:read() end do
    local more = messages(chunk, function(text, ending)
      if text == "exit" then return false end
      conn:write("Hello, ", text, "!", ending)
    end)
    if more == false then break end
  end
end)
