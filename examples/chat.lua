-- A chat room over WebSocket: every message a client sends goes to everyone in the room,
-- through srv.pubsub, so it works the same under --workers N (each client may be served by
-- another worker).
-- Run:  luasrv examples/chat.lua [port]                (default 8080)
--       luasrv --workers 4 examples/chat.lua 8080
-- Try:  open http://127.0.0.1:8080/chat.html?name=ann in two browser windows
--       python3 -m websockets ws://127.0.0.1:8080/chat     (type JSON: {"text":"hi"})
local srv = require "luasrv"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local app = srv.http.app()

local ROOM = "chat"

local function say(name, text)
  srv.pubsub.publish(ROOM, srv.json.encode({ name = name, text = text, at = os.date("!%H:%M:%S") }))
end

app:websocket("/chat", function(ws, req)
  local name = (req.query.name or ""):gsub("[^%w%- _.]", ""):sub(1, 20)
  if name == "" then name = "guest" .. math.random(1000, 9999) end
  -- A subscription per client; its own task forwards the room's messages to the socket
  -- while this one reads what the client says.
  local sub = srv.pubsub.subscribe(ROOM, { queue = 100 })
  srv.after(0, function()
    for msg in sub:messages() do
      if not ws:send(msg) then break end
    end
  end)
  say("*", name .. " joined")
  for msg in ws:messages() do
    local ok, data = pcall(srv.json.decode, msg)
    local text = ok and type(data) == "table" and data.text or msg
    if type(text) == "string" and text ~= "" then say(name, text:sub(1, 500)) end
  end
  sub:close()
  say("*", name .. " left")
end, { max_message = 4096, idle_timeout = 600 })

app:static("/", here .. "/public")

srv.http.listen({ port = tonumber(arg[1]) or 8080 }, app)
