-- WebSocket broadcast for scripts/bench (ws_broadcast): every client subscribes to one topic;
-- a message from any client is published to it, and so reaches every client.
local srv = require "luasrv"

local app = srv.http.app()
app:websocket("/room", function(ws)
  local sub = srv.pubsub.subscribe("room")
  srv.after(0, function()
    for msg in sub:messages() do
      if not ws:send(msg) then break end
    end
  end)
  for msg in ws:messages() do srv.pubsub.publish("room", msg) end
  sub:close()
end)
srv.http.listen({ port = tonumber(arg[1]) or 0 }, app)
