-- A client for examples/echo.lua: sends michael, tracy, sarah and exit, printing each reply.
-- Run:  luasrv examples/echo_client.lua [port] [host]   (defaults 9999, 127.0.0.1)
local srv = require "luasrv"

local port = tonumber(arg[1]) or 9999
local host = arg[2] or "127.0.0.1"

local conn, err = srv.tcp.connect(host, port, { timeout = 5 })
if not conn then
  io.stderr:write(("cannot connect to %s:%d: %s\n"):format(host, port, err))
  os.exit(1)
end
print(conn:read())                        -- the greeting, "Welcome!" (no newline)
for _, name in ipairs({ "michael", "tracy", "sarah" }) do
  conn:write(name, "\n")
  print(conn:readline())
end
conn:write("exit\n")
assert(conn:read("a") == "", "the server should close after exit")
conn:close()
