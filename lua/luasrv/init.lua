--- luasrv: the public Lua API.
-- The C core (luasrv.core) owns sockets, timers and the event loop; this module arranges its
-- functions into the documented shape and adds what reads better in Lua.
local core = require "luasrv.core"

local select, tostring, concat = select, tostring, table.concat

local M = {
  http = require "luasrv.http",
  version = core.version,
  run = core.run,
  loop = core.loop,
  stop = core.stop,
  sleep = core.sleep,
  after = core.after,
  every = core.every,
  now = core.now,
  monotime = core.monotime,
  memory = core.memory,
  shared = core.shared,
  json = core.json,
  worker = core.worker,
  pubsub = core.pubsub,
  ws = {
    connect = function(...) return require("luasrv.ws").connect(...) end,
  },
  tcp = {
    listen = core.tcp.listen,
    connect = core.tcp.connect,
  },
  udp = {
    listen = core.udp.listen,
    socket = core.udp.socket,
    address = core.udp.address,
  },
}

local function log_line(...)
  local n = select("#", ...)
  if n == 1 then
    return tostring((...))
  end
  local parts = {}
  for i = 1, n do
    parts[i] = tostring((select(i, ...)))
  end
  return concat(parts, " ")
end

--- srv.log.info/warn/error(...): one line on stderr, the arguments joined by spaces.
M.log = {
  debug = function(...) core.log("debug", log_line(...)) end,
  info = function(...) core.log("info", log_line(...)) end,
  warn = function(...) core.log("warn", log_line(...)) end,
  error = function(...) core.log("error", log_line(...)) end,
}

return M
