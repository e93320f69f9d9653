-- WebSocket echo for scripts/bench (ws_echo): every message back as it came.
local srv = require "luasrv"

local app = srv.http.app()
app:websocket("/echo", function(ws)
  for msg, kind in ws:messages() do ws:send(msg, kind) end
end)
srv.http.listen({ port = tonumber(arg[1]) or 0 }, app)
