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

-- Calls fn(text, ending) for each line of a chunk (ending "\n") and for a last piece without
-- a newline (ending "").
local function messages(chunk, fn)
  for line in chunk:gmatch("([^\n]*)\n") do
    if fn((line:gsub("\r$", "")), "\n") == false then return false end
  end
  local rest = chunk:match("[^\n]*$")
  if rest ~= "" then return fn(rest, "") end
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
