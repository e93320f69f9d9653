-- The WebSocket server against an independent, strict client: Debian's python3-websockets
-- (installed by scripts/setup), which fails the connection on any framing it does not like.
local W = require "ws_helper"

local server

local HEAD = [[
import asyncio, json, sys
import websockets

PORT = int(sys.argv[1])
URL = "ws://127.0.0.1:%d" % PORT

async def main():]]
local TAIL = "print(json.dumps(asyncio.run(asyncio.wait_for(main(), 30))))"

-- Runs a Python coroutine body against the server; returns what it returns.
local function python(body)
  return W.python(HEAD, body, TAIL, tostring(server.port))
end

describe("WebSocket server with python3-websockets", function()
  server = W.fixture_hooks(setup, teardown)

  it("echoes text and binary messages", function()
    local r = python([[
async with websockets.connect(URL + "/echo") as ws:
    out = []
    for m in ["hello", "", "κόσμε", "x" * 70000]:
        await ws.send(m)
        out.append(await ws.recv())
    await ws.send(bytes(range(256)))
    b = await ws.recv()
    return {"text": out, "binary": list(b)}
]])
    assert.same({ "hello", "", "κόσμε", string.rep("x", 70000) }, r.text)
    assert.equal(256, #r.binary)
    assert.equal(255, r.binary[256])
  end)

  it("reassembles a fragmented message", function()
    local r = python([[
async with websockets.connect(URL + "/echo") as ws:
    await ws.send(["frag", "men", "ted ", "κό", "σμε"])
    t = await ws.recv()
    await ws.send([b"\x00\x01", b"\x02"])
    b = await ws.recv()
    return {"text": t, "binary": list(b)}
]])
    assert.equal("fragmented κόσμε", r.text)
    assert.same({ 0, 1, 2 }, r.binary)
  end)

  it("answers the client's pings", function()
    local r = python([[
async with websockets.connect(URL + "/echo") as ws:
    waiter = await ws.ping(b"are you there")
    latency = await asyncio.wait_for(waiter, 5)
    return {"pong": True}
]])
    assert.is_true(r.pong)
  end)

  it("completes a close the client starts, with its code and reason", function()
    local r = python([[
ws = await websockets.connect(URL + "/echo")
await ws.send("one")
await ws.recv()
await ws.close(4001, "client done")
return {"code": ws.close_code, "reason": ws.close_reason}
]])
    assert.same({ code = 4001, reason = "client done" }, r)
  end)

  it("completes a close the server starts", function()
    local r = python([[
ws = await websockets.connect(URL + "/close")
await ws.send("4002 server done")
try:
    await ws.recv()
except websockets.ConnectionClosed as e:
    return {"code": e.rcvd.code, "reason": e.rcvd.reason, "echoed": e.sent.code}
return {"code": None}
]])
    assert.same({ code = 4002, reason = "server done", echoed = 4002 }, r)
  end)

  it("closes with 1000 when the handler returns", function()
    local r = python([[
ws = await websockets.connect(URL + "/timeout")
first = await ws.recv()
await ws.close()
return {"first": first, "code": ws.close_code}
]])
    assert.same({ first = "nil timeout", code = 1000 }, r)
  end)

  it("says goodbye with 1001 to open WebSockets on SIGTERM, and the server exits 0", function()
    local own = W.start_fixture()
    local ok, err = pcall(function()
      local r = W.python(HEAD, [[
import os, signal
ws = await websockets.connect("ws://127.0.0.1:%d/echo" % int(sys.argv[2]))
await ws.send("one")
first = await ws.recv()
os.kill(int(sys.argv[3]), signal.SIGTERM)
try:
    await ws.recv()
except websockets.ConnectionClosed as e:
    return {"first": first, "code": e.rcvd and e.rcvd.code, "reason": e.rcvd and e.rcvd.reason}
return {"first": first, "code": None}
]], TAIL, ("0 %d %d"):format(own.port, own.pid))
      assert.same({ first = "one", code = 1001, reason = "server stopping" }, r)
      assert.equal(0, own:wait())
    end)
    own:cleanup()
    assert(ok, err)
  end)

  it("negotiates a subprotocol", function()
    local r = python([[
async with websockets.connect(URL + "/proto", subprotocols=["chat"]) as ws:
    return {"proto": ws.subprotocol, "said": await ws.recv()}
]])
    assert.same({ proto = "chat", said = "chat" }, r)
  end)

  it("closes with 1009 when a message is over max_message", function()
    local r = python([[
async with websockets.connect(URL + "/small") as ws:
    await ws.send("y" * 1001)
    try:
        await ws.recv()
    except websockets.ConnectionClosed as e:
        return {"code": e.rcvd.code}
return {"code": None}
]])
    assert.same({ code = 1009 }, r)
  end)

  it("serves many clients at once", function()
    local r = python([[
async def one(i):
    async with websockets.connect(URL + "/echo") as ws:
        for j in range(20):
            await ws.send("%d-%d" % (i, j))
            assert await ws.recv() == "%d-%d" % (i, j)
        return i
done = await asyncio.gather(*[one(i) for i in range(50)])
return {"done": len(done)}
]])
    assert.same({ done = 50 }, r)
  end)
end)
