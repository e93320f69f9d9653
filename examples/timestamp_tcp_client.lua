-- A client for examples/timestamp_tcp.lua: sends each message given on the command line (or,
-- with none, each line of stdin) and prints the stamped reply.
-- Run:  luasrv examples/timestamp_tcp_client.lua [port [message ...]]   (default port 8888)
--       date | luasrv examples/timestamp_tcp_client.lua 8888
local srv = require "luasrv"

local function fail(message)
  io.stderr:write("timestamp_tcp_client: ", message, "\n")
  os.exit(1)
end

local port = tonumber(arg[1] or 8888)
if not port then fail("usage: timestamp_tcp_client.lua [port [message ...]]") end

local conn, err = srv.tcp.connect("127.0.0.1", port, { timeout = 5 })
if not conn then fail(("cannot connect to 127.0.0.1:%d: %s"):format(port, err)) end
conn:settimeout(5)

-- One line out, one line back: the server answers each line in turn.
local function stamp(message)
  conn:write(message, "\n")
  local reply, read_err = conn:readline()
  if not reply then fail("no reply: " .. read_err) end
  print(reply)
end

if #arg > 1 then
  for i = 2, #arg do stamp(arg[i]) end
else
  -- Reading stdin blocks the loop: fine for a client with nothing else to do.
  for line in io.lines() do stamp(line) end
end
conn:close()
