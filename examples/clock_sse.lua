-- The server's time pushed to a page with Server-Sent Events: /clock is an event stream that
-- sends a "tick" every second; the page at / shows it with the browser's EventSource, which
-- reconnects by itself (and tells the server the last id it saw, in Last-Event-ID).
-- Run:  luasrv examples/clock_sse.lua [port]        (default 8080)
-- Try:  open http://127.0.0.1:8080/ in a browser
--       curl -N http://127.0.0.1:8080/clock
local srv = require "luasrv"

local app = srv.http.app()

local PAGE = [[<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>luasrv clock</title>
  <style>
    body { font: 18px system-ui, sans-serif; text-align: center; margin-top: 4em; }
    #clock { font: bold 64px monospace; }
    #info { color: #777; }
  </style>
</head>
<body>
  <div id="clock">--:--:--</div>
  <p id="info">waiting for the server...</p>
  <script>
    const clock = document.getElementById("clock");
    const info = document.getElementById("info");
    let ticks = 0;
    const source = new EventSource("/clock");
    source.addEventListener("tick", (ev) => {
      ticks++;
      clock.textContent = ev.data;
      info.textContent = "server time, tick " + ev.lastEventId + " (" + ticks + " received)";
    });
    source.onerror = () => { info.textContent = "reconnecting..."; };
  </script>
</body>
</html>
]]

app:get("/", function() return PAGE end)

app:get("/clock", function(req, res)
  local ev = assert(res:sse())
  -- A client that reconnects goes on counting from the id it saw last.
  local n = tonumber(req.headers["last-event-id"]) or 0
  ev:send{ retry = 1000 }
  while true do
    n = n + 1
    if not ev:send{ event = "tick", id = n, data = os.date("!%H:%M:%S UTC") } then return end
    srv.sleep(1)
  end
end)

srv.http.listen({ port = tonumber(arg[1]) or 8080 }, app)
