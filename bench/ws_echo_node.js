// WebSocket echo on Node.js with the `ws` package, for scripts/bench (ws_echo): the same
// answer as bench/ws_echo_app.lua, permessage-deflate off (the load generator never asks).
"use strict";
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || 0);
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
wss.on("listening", () => {
  console.log("listening on ws://127.0.0.1:" + wss.address().port);
});
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
});
