-- Length-prefixed messages ("framing") over TCP: an echo server, and a client mode to try it.
--
-- TCP carries a stream of bytes, not messages. Two writes may reach the reader as one read
-- ("sticky packets") and one write may arrive in several pieces, so a protocol has to mark
-- where each message ends. A newline does it for text; for any bytes, send the length first.
-- Here a message is a 4-byte big-endian length and then that many bytes (what
-- string.pack(">s4", msg) makes), and conn:read_frame("u32") waits for one whole message
-- however the network cut it up; conn:write_frame("u32", msg) sends one.
--
-- Run:  luasrv examples/framing.lua [port]                        (server, default port 9191)
-- Try:  luasrv examples/framing.lua client [port [message ...]]   (all messages in one write)
local srv = require "luasrv"

local MAX = 1024 * 1024 -- a longer message is refused and its connection dropped

local function serve(port)
  srv.tcp.listen({ port = port }, function(conn)
    while true do
      local message = conn:read_frame("u32", MAX)
      if not message then return end -- the peer closed, or announced more than MAX
      conn:write_frame("u32", message)
    end
  end)
end

local function fail(message)
  io.stderr:write("framing: ", message, "\n")
  os.exit(1)
end

local function client(port, messages)
  local conn, err = srv.tcp.connect("127.0.0.1", port, { timeout = 5 })
  if not conn then fail(("cannot connect to 127.0.0.1:%d: %s"):format(port, err)) end
  conn:settimeout(5)
  -- Every message in a single write: they leave as one run of bytes, and only the lengths
  -- let the server cut it back into messages.
  local frames = {}
  for i, message in ipairs(messages) do frames[i] = string.pack(">s4", message) end
  conn:write(table.concat(frames))
  for _ = 1, #messages do
    local reply, read_err = conn:read_frame("u32")
    if not reply then fail("no reply: " .. read_err) end
    print(reply)
  end
  conn:close()
end

if arg[1] == "client" then
  local port = tonumber(arg[2] or 9191)
  if not port then fail("usage: framing.lua client [port [message ...]]") end
  local messages = table.move(arg, 3, #arg, 1, {})
  if #messages == 0 then messages = { "hello", "sticky", "packets" } end
  client(port, messages)
else
  serve(tonumber(arg[1]) or 9191)
end
