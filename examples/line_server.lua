-- A line-oriented request server: one request line in, one response line out. It is the
-- event-loop answer to Python's ThreadingTCPServer + StreamRequestHandler: the handler reads
-- like blocking code, but each connection is a coroutine on one loop, not a thread.
--
-- Protocol (command names in any case; answers are "OK <result>" or "ERR <reason>"):
--   UPPER text    LOWER text    REVERSE text (UTF-8 aware)    TIME (UTC, ISO 8601)
--   HELP          QUIT (answers "OK bye" and closes)
--
-- Run:  luasrv examples/line_server.lua [port]          (default port 9090)
-- Try:  nc 127.0.0.1 9090, then type "upper hello" or "help"
local srv = require "luasrv"

local port = tonumber(arg[1]) or 9090

local commands = {}

function commands.UPPER(text) return text:upper() end

function commands.LOWER(text) return text:lower() end

function commands.REVERSE(text)
  if not utf8.len(text) then return nil, "not UTF-8" end
  local codes = { utf8.codepoint(text, 1, -1) }
  local reversed = {}
  for i = #codes, 1, -1 do reversed[#reversed + 1] = codes[i] end
  return utf8.char(table.unpack(reversed))
end

function commands.TIME() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

function commands.HELP() return "UPPER text, LOWER text, REVERSE text, TIME, HELP, QUIT" end

-- The response line for one request line.
local function respond(line)
  local name, text = line:match("^(%S*)%s?(.*)$")
  local command = commands[name:upper()]
  if not command then return "ERR unknown command" end
  local result, err = command(text)
  if not result then return "ERR " .. err end
  return "OK " .. result
end

-- Idle clients are dropped after 5 minutes; a request line may hold up to 4 KiB.
srv.tcp.listen({ port = port, timeout = 300, line_max = 4096 }, function(conn)
  local client = ("%s:%s"):format(conn:peer())
  while true do
    local line, err = conn:readline()
    if not line then
      -- "closed" is the client hanging up; anything else ("timeout", "line too long") is news.
      if err ~= "closed" then srv.log.info(client, "dropped:", err) end
      return
    end
    if line:upper() == "QUIT" then
      conn:write("OK bye\n")
      return                           -- returning closes the connection
    end
    conn:write(respond(line), "\n")
  end
end)
