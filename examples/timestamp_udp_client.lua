-- A client for examples/timestamp_udp.lua: sends each message given on the command line (or,
-- with none, each line of stdin) as one datagram and prints the stamped reply. UDP may lose a
-- datagram, so each one is sent up to three times; with no reply after that it gives up.
-- Run:  luasrv examples/timestamp_udp_client.lua [port [message ...]]   (default port 8888)
--       date | luasrv examples/timestamp_udp_client.lua 8888
-- Environment: TIMESTAMP_HOST (default 127.0.0.1), TIMESTAMP_TIMEOUT (seconds per try, 1).
local srv = require "luasrv"

local function fail(message)
  io.stderr:write("timestamp_udp_client: ", message, "\n")
  os.exit(1)
end

local port = tonumber(arg[1] or 8888)
if not port then fail("usage: timestamp_udp_client.lua [port [message ...]]") end
local host = os.getenv("TIMESTAMP_HOST") or "127.0.0.1"
local timeout = tonumber(os.getenv("TIMESTAMP_TIMEOUT") or 1)
local tries = 3

-- Connected to the server, the socket takes replies from it only (and hears "connection
-- refused" when nothing listens there).
local sock = srv.udp.socket()
local ok, err = sock:connect(host, port)
if not ok then fail(("cannot reach %s:%d: %s"):format(host, port, err)) end

local function stamp(message)
  for _ = 1, tries do
    local sent, send_err = sock:send(message)
    if not sent then fail("cannot send: " .. send_err) end
    local reply, recv_err = sock:recv(timeout)
    if reply then
      -- A late answer to an earlier try would be a stale reply: the stamp tells them apart
      -- only by content, so match the message.
      if reply:sub(-#message - 1) == " " .. message then
        print(reply)
        return
      end
    elseif recv_err ~= "timeout" then
      fail(("no reply from %s:%d: %s"):format(host, port, recv_err))
    end
  end
  fail(("no reply from %s:%d after %d tries of %gs"):format(host, port, tries, timeout))
end

if #arg > 1 then
  for i = 2, #arg do stamp(arg[i]) end
else
  -- Reading stdin blocks the loop: fine for a client with nothing else to do.
  for line in io.lines() do stamp(line) end
end
sock:close()
