-- permessage-deflate (RFC 7692): negotiation, compressed messages both ways, and the limits
-- (a "zip bomb" closes with 1009, bad data with 1007), checked with raw frames from Python's
-- socket and zlib, and with python3-websockets' own implementation.
local helper = require "helper"
local W = require "ws_helper"

local server

-- Runs a Python body with a raw WebSocket client at hand: open(path, extensions) -> (sock,
-- head), send(sock, opcode, payload, rsv1), recv(sock) -> (opcode, payload, rsv1),
-- deflate(data), inflate(data). Prints what the body returns, as JSON.
local HEAD = [[

import json, os, socket, struct, sys, zlib

PORT = int(sys.argv[1])

def open_ws(path, extensions=None):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    req = ("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" % path)
    if extensions:
        req += "Sec-WebSocket-Extensions: %s\r\n" % extensions
    s.sendall((req + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return s, head.decode()

def send(s, opcode, payload, rsv1=False, fin=True):
    mask = os.urandom(4)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126: h = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536: h = struct.pack("!BBH", b0, 0x80 | 126, n)
    else: h = struct.pack("!BBQ", b0, 0x80 | 127, n)
    s.sendall(h + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))

def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk: raise EOFError("closed")
        data += chunk
    return data

def recv(s):
    b0, b1 = recv_exact(s, 2)
    n = b1 & 0x7f
    if n == 126: n = struct.unpack("!H", recv_exact(s, 2))[0]
    elif n == 127: n = struct.unpack("!Q", recv_exact(s, 8))[0]
    return b0 & 0x0f, recv_exact(s, n), bool(b0 & 0x40)

def close_code(s):
    op, payload, _ = recv(s)
    assert op == 8, op
    return struct.unpack("!H", payload[:2])[0]

def deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]

def inflate(data):
    return zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")

def main():]]

local function python(body)
  return W.python(HEAD, body, "print(json.dumps(main()))", tostring(server.port))
end

describe("WebSocket permessage-deflate", function()
  server = W.fixture_hooks(setup, teardown)

  it("is negotiated without context takeover on either side", function()
    local r = python([[
s, head = open_ws("/echo", "permessage-deflate; client_max_window_bits")
return head.split("\r\n")
]])
    local found
    for _, line in ipairs(r) do
      if line:lower():find("^sec%-websocket%-extensions:") then found = line end
    end
    assert.equal("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; " ..
      "client_no_context_takeover", found)
  end)

  it("takes the first offer it can honour, and a smaller server window", function()
    local r = python([[
s, head = open_ws("/echo", "permessage-deflate; unknown_param, permessage-deflate; server_max_window_bits=10")
msg = b"window " * 300
send(s, 1, deflate(msg), rsv1=True)
op, payload, rsv1 = recv(s)
return {"head": head, "rsv1": rsv1, "same": inflate(payload) == msg}
]])
    assert.matches("server_max_window_bits=10", r.head)
    assert.is_true(r.rsv1)
    assert.is_true(r.same)
  end)

  it("is not negotiated for offers it cannot honour, or where compress = false", function()
    local r = python([[
a = open_ws("/echo", "permessage-deflate; server_max_window_bits=8")[1]
b = open_ws("/echo", "x-webkit-deflate-frame")[1]
c = open_ws("/plain", "permessage-deflate")[1]
return [("Extensions" in h) for h in (a, b, c)]
]])
    assert.same({ false, false, false }, r)
  end)

  it("inflates compressed messages and compresses what it sends", function()
    local r = python([[
s, head = open_ws("/echo", "permessage-deflate")
out = []
for msg in [b"hello", "κόσμε ".encode() * 200, b"z" * 100000]:
    send(s, 1, deflate(msg), rsv1=True)
    op, payload, rsv1 = recv(s)
    out.append({"len": len(msg), "wire": len(payload), "rsv1": rsv1,
                "same": (inflate(payload) if rsv1 else payload) == msg})
send(s, 2, b"not compressed, not small either " * 10)
op, payload, rsv1 = recv(s)
out.append({"rsv1": rsv1, "same": inflate(payload) == b"not compressed, not small either " * 10})
return out
]])
    -- short messages go out as they are; long ones compressed, and much smaller
    assert.same({ len = 5, wire = 5, rsv1 = false, same = true }, r[1])
    for i = 2, 3 do
      assert.is_true(r[i].rsv1)
      assert.is_true(r[i].same)
      assert.is_true(r[i].wire < r[i].len / 10)
    end
    assert.same({ rsv1 = true, same = true }, r[4])
  end)

  it("inflates a compressed message sent in fragments", function()
    local r = python([[
s, head = open_ws("/echo", "permessage-deflate")
data = deflate(b"fragmented and compressed " * 50)
send(s, 1, data[:10], rsv1=True, fin=False)
send(s, 0, data[10:20], fin=False)
send(s, 9, b"ping in between")
send(s, 0, data[20:])
pong = recv(s)
op, payload, rsv1 = recv(s)
return {"pong": pong[0], "same": (inflate(payload) if rsv1 else payload) == b"fragmented and compressed " * 50}
]])
    assert.same({ pong = 10, same = true }, r)
  end)

  it("closes with 1009 when a message inflates past max_message (a zip bomb)", function()
    local r = python([[
# 10 MiB of zeros in about 10 KB, against the default 1 MiB limit: inflating stops there
s, head = open_ws("/echo", "permessage-deflate")
bomb = deflate(b"\0" * (10 * 1024 * 1024))
send(s, 2, bomb, rsv1=True)
return {"compressed": len(bomb), "code": close_code(s)}
]])
    assert.is_true(r.compressed < 20000)
    assert.equal(1009, r.code)
  end)

  it("closes with 1009 when the compressed message itself is far over max_message", function()
    local r = python([[
s, head = open_ws("/small", "permessage-deflate")
send(s, 2, deflate(os.urandom(8000)), rsv1=True)
return close_code(s)
]])
    assert.equal(1009, r)
  end)

  it("closes with 1007 for data that is not deflate", function()
    local r = python([[
s, head = open_ws("/echo", "permessage-deflate")
send(s, 2, b"\xff\xff\xff\xff garbage", rsv1=True)
return close_code(s)
]])
    assert.equal(1007, r)
  end)

  it("closes with 1007 for compressed text that is not UTF-8", function()
    local r = python([[
s, head = open_ws("/echo", "permessage-deflate")
send(s, 1, deflate(b"ok then \xed\xa0\x80"), rsv1=True)
return close_code(s)
]])
    assert.equal(1007, r)
  end)

  it("refuses RSV1 on a continuation or control frame with 1002", function()
    local r = python([[
s, head = open_ws("/echo", "permessage-deflate")
send(s, 1, deflate(b"abc"), rsv1=True, fin=False)
send(s, 0, b"", rsv1=True)
a = close_code(s)
s, head = open_ws("/echo", "permessage-deflate")
send(s, 9, b"", rsv1=True)
return [a, close_code(s)]
]])
    assert.same({ 1002, 1002 }, r)
  end)

  it("works with python3-websockets' permessage-deflate", function()
    local script = helper.tmpname(".py")
    helper.write_file(script, [[
import asyncio, sys, websockets
async def main():
    async with websockets.connect("ws://127.0.0.1:%s/echo" % sys.argv[1], compression="deflate") as ws:
        assert "permessage-deflate" in ws.response_headers["Sec-WebSocket-Extensions"]
        for m in ["hi", "repeat " * 1000, bytes(range(256)) * 40]:
            await ws.send(m)
            assert await ws.recv() == m
    print("ok")
asyncio.run(main())
]])
    local out = helper.capture(("%s %s %d 2>&1"):format(W.PYTHON, script, server.port))
    os.remove(script)
    assert.equal("ok\n", out)
  end)
end)
