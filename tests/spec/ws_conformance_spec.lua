-- WebSocket server conformance, by the Autobahn|Testsuite's categories: raw frames over a
-- socket (tests/spec/ws_helper.lua) against tests/fixtures/ws_app.lua. Each case checks what
-- the server sends back: the echo, the pong, or the close frame with its code, and that the
-- server then closes the TCP connection.
local srv = require "luasrv"
local W = require "ws_helper"

local char, rep = string.char, string.rep

local server

local function case(name, fn)
  it(name, function()
    srv.run(function() fn(server.port) end)
  end)
end

-- Opens /echo (or path) and checks the 101.
local function open(port, path, extra, first)
  local conn, status, headers = W.open(port, path or "/echo", extra, first)
  assert.equal(101, status)
  assert.equal(W.ACCEPT, headers["sec-websocket-accept"])
  return conn, headers
end

-- Sends bytes, then expects the close frame with `code` and the end of the connection.
local function expect_failure(port, bytes, code, path)
  local conn = open(port, path)
  conn:write(bytes)
  local got, reason = W.read_close(conn)
  assert.equal(code, got, reason)
  assert.is_true(W.closed(conn))
  conn:close()
end

-- Sends one message (as given frames) and expects `want` back, then a clean close.
local function expect_echo(port, bytes, opcode, want)
  local conn = open(port)
  conn:write(bytes)
  local op, payload = W.read_frame(conn)
  assert.equal(W.OP[opcode], op)
  assert.equal(#want, #payload)
  assert.equal(want, payload)
  assert.equal(1000, W.close(conn))
end

-- Sends n short messages in one write and expects them back in order.
local function burst(port, n)
  local conn = open(port)
  local out = {}
  for i = 1, n do out[i] = W.frame("text", "m" .. i) end
  conn:write(table.concat(out))
  for i = 1, n do
    local _, payload = W.read_frame(conn)
    assert.equal("m" .. i, payload)
  end
  assert.equal(1000, W.close(conn))
end

local function pattern(n)
  local s = rep("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", n // 62 + 1)
  return s:sub(1, n)
end

describe("WebSocket conformance", function()
  server = W.fixture_hooks(setup, teardown)

  describe("1 framing", function()
    for _, len in ipairs({ 0, 1, 125, 126, 127, 128, 1000, 65535, 65536, 100000 }) do
      case(("text message of %d bytes is echoed"):format(len), function(port)
        expect_echo(port, W.frame("text", pattern(len)), "text", pattern(len))
      end)
      case(("binary message of %d bytes is echoed"):format(len), function(port)
        local data = rep(char(0, 255, 128, 7), len // 4 + 1):sub(1, len)
        expect_echo(port, W.frame("binary", data), "binary", data)
      end)
    end
    for _, len in ipairs({ 1, 126, 65536 }) do
      case(("a %d-byte text frame written in small pieces"):format(len), function(port)
        local conn = open(port)
        local bytes = W.frame("text", pattern(len))
        local step = len > 1000 and 997 or 1
        for i = 1, #bytes, step do conn:write(bytes:sub(i, i + step - 1)) end
        local op, payload = W.read_frame(conn)
        assert.equal(W.OP.text, op)
        assert.equal(pattern(len), payload)
        assert.equal(1000, W.close(conn))
      end)
    end
    case("messages sent in one write are echoed in order", function(port)
      burst(port, 50)
    end)
    case("a frame in the same write as the handshake is taken", function(port)
      local conn = open(port, "/echo", nil, W.frame("text", "early"))
      local _, payload = W.read_frame(conn)
      assert.equal("early", payload)
      assert.equal(1000, W.close(conn))
    end)
    case("an unmasked frame from the client fails with 1002", function(port)
      expect_failure(port, W.frame("text", "hi", { masked = false }), 1002)
    end)
    case("an unmasked ping fails with 1002", function(port)
      expect_failure(port, W.frame("ping", "", { masked = false }), 1002)
    end)
    case("a 64-bit length with the high bit set fails with 1002", function(port)
      expect_failure(port, char(0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1) .. "abcd", 1002)
    end)
    case("server frames are never masked and carry FIN", function(port)
      local conn = open(port)
      conn:write(W.frame("binary", "x"))
      local op, payload, fin, rsv = W.read_frame(conn)
      assert.same({ W.OP.binary, "x", true, 0 }, { op, payload, fin, rsv })
      assert.equal(1000, W.close(conn))
    end)
  end)

  describe("2 pings and pongs", function()
    for _, len in ipairs({ 0, 1, 10, 125 }) do
      case(("a ping with %d bytes gets a pong with the same bytes"):format(len), function(port)
        local conn = open(port)
        conn:write(W.frame("ping", pattern(len)))
        local op, payload = W.read_frame(conn)
        assert.equal(W.OP.pong, op)
        assert.equal(pattern(len), payload)
        assert.equal(1000, W.close(conn))
      end)
    end
    case("a ping with binary payload gets it back", function(port)
      local conn = open(port)
      local data = char(0, 255, 254, 253, 252, 251, 250, 249)
      conn:write(W.frame("ping", data))
      local op, payload = W.read_frame(conn)
      assert.same({ W.OP.pong, data }, { op, payload })
      assert.equal(1000, W.close(conn))
    end)
    case("a ping of 126 bytes fails with 1002", function(port)
      expect_failure(port, W.frame("ping", pattern(126)), 1002)
    end)
    case("an unsolicited pong is ignored", function(port)
      local conn = open(port)
      conn:write(W.frame("pong", "unasked") .. W.frame("text", "after"))
      local op, payload = W.read_frame(conn)
      assert.same({ W.OP.text, "after" }, { op, payload })
      assert.equal(1000, W.close(conn))
    end)
    case("an unsolicited empty pong is ignored", function(port)
      local conn = open(port)
      conn:write(W.frame("pong", "") .. W.frame("text", "after"))
      local _, payload = W.read_frame(conn)
      assert.equal("after", payload)
      assert.equal(1000, W.close(conn))
    end)
    case("ten pings get ten pongs in order", function(port)
      local conn = open(port)
      local out = {}
      for i = 1, 10 do out[i] = W.frame("ping", "p" .. i) end
      conn:write(table.concat(out))
      for i = 1, 10 do
        local op, payload = W.read_frame(conn)
        assert.same({ W.OP.pong, "p" .. i }, { op, payload })
      end
      assert.equal(1000, W.close(conn))
    end)
    case("a ping written byte by byte gets its pong", function(port)
      local conn = open(port)
      local bytes = W.frame("ping", "slow ping")
      for i = 1, #bytes do conn:write(bytes:sub(i, i)) end
      local op, payload = W.read_frame(conn)
      assert.same({ W.OP.pong, "slow ping" }, { op, payload })
      assert.equal(1000, W.close(conn))
    end)
    case("the server's own ping reaches the client", function(port)
      local conn = open(port, "/ping")
      local op, payload = W.read_frame(conn)
      assert.same({ W.OP.ping, "hello?" }, { op, payload })
      conn:write(W.frame("pong", "hello?") .. W.frame("text", "x"))
      local _, echo = W.read_frame(conn)
      assert.equal("x", echo)
      assert.equal(1000, W.close(conn))
    end)
  end)

  describe("3 reserved bits", function()
    for rsv = 1, 7 do
      for _, op in ipairs({ "text", "binary", "ping", "pong", "close" }) do
        case(("RSV=%d on a %s frame fails with 1002"):format(rsv, op), function(port)
          local payload = op == "close" and W.close_payload(1000) or "data"
          expect_failure(port, W.frame(op, payload, { rsv = rsv }), 1002)
        end)
      end
    end
    case("a message before a frame with RSV set is still echoed", function(port)
      local conn = open(port)
      conn:write(W.frame("text", "good") .. W.frame("text", "bad", { rsv = 1 }))
      local _, payload = W.read_frame(conn)
      assert.equal("good", payload)
      assert.equal(1002, (W.read_close(conn)))
      assert.is_true(W.closed(conn))
    end)
    case("RSV on a continuation frame fails with 1002", function(port)
      expect_failure(port, W.frame("text", "a", { fin = false }) .. W.frame("cont", "b", { rsv = 4 }), 1002)
    end)
  end)

  describe("4 opcodes", function()
    for _, op in ipairs({ 3, 4, 5, 6, 7, 11, 12, 13, 14, 15 }) do
      case(("reserved opcode %d fails with 1002"):format(op), function(port)
        expect_failure(port, W.frame(op, ""), 1002)
      end)
      case(("reserved opcode %d with a payload, after a message, fails with 1002"):format(op), function(port)
        local conn = open(port)
        conn:write(W.frame("text", "first") .. W.frame(op, "payload"))
        local _, payload = W.read_frame(conn)
        assert.equal("first", payload)
        assert.equal(1002, (W.read_close(conn)))
        assert.is_true(W.closed(conn))
      end)
    end
  end)

  describe("5 fragmentation", function()
    case("a fragmented ping fails with 1002", function(port)
      expect_failure(port, W.frame("ping", "a", { fin = false }) .. W.frame("cont", "b"), 1002)
    end)
    case("a fragmented pong fails with 1002", function(port)
      expect_failure(port, W.frame("pong", "a", { fin = false }) .. W.frame("cont", "b"), 1002)
    end)
    case("a fragmented close fails with 1002", function(port)
      expect_failure(port, W.frame("close", W.close_payload(1000), { fin = false }), 1002)
    end)
    for _, n in ipairs({ 2, 3, 10, 100 }) do
      case(("a text message in %d fragments is one message"):format(n), function(port)
        local parts, frames = {}, {}
        for i = 1, n do
          parts[i] = "part" .. i .. ";"
          frames[i] = W.frame(i == 1 and "text" or "cont", parts[i], { fin = i == n })
        end
        expect_echo(port, table.concat(frames), "text", table.concat(parts))
      end)
      case(("a binary message in %d fragments is one message"):format(n), function(port)
        local parts, frames = {}, {}
        for i = 1, n do
          parts[i] = char(i % 256, 0, 255)
          frames[i] = W.frame(i == 1 and "binary" or "cont", parts[i], { fin = i == n })
        end
        expect_echo(port, table.concat(frames), "binary", table.concat(parts))
      end)
    end
    case("fragments written one at a time with pauses", function(port)
      local conn = open(port)
      conn:write(W.frame("text", "fragment1", { fin = false }))
      srv.sleep(0.05)
      conn:write(W.frame("cont", "fragment2", { fin = false }))
      srv.sleep(0.05)
      conn:write(W.frame("cont", "fragment3"))
      local _, payload = W.read_frame(conn)
      assert.equal("fragment1fragment2fragment3", payload)
      assert.equal(1000, W.close(conn))
    end)
    case("a ping between fragments is answered first", function(port)
      local conn = open(port)
      conn:write(W.frame("text", "frag1", { fin = false }) .. W.frame("ping", "between") ..
        W.frame("cont", "frag2"))
      local op, payload = W.read_frame(conn)
      assert.same({ W.OP.pong, "between" }, { op, payload })
      op, payload = W.read_frame(conn)
      assert.same({ W.OP.text, "frag1frag2" }, { op, payload })
      assert.equal(1000, W.close(conn))
    end)
    case("a pong between fragments is ignored", function(port)
      expect_echo(port, W.frame("text", "a", { fin = false }) .. W.frame("pong", "x") ..
        W.frame("cont", "b"), "text", "ab")
    end)
    case("pings between many fragments are all answered", function(port)
      local conn = open(port)
      local out = {}
      for i = 1, 5 do
        out[#out + 1] = W.frame(i == 1 and "text" or "cont", tostring(i), { fin = i == 5 })
        if i < 5 then out[#out + 1] = W.frame("ping", "p" .. i) end
      end
      conn:write(table.concat(out))
      for i = 1, 4 do
        local op, payload = W.read_frame(conn)
        assert.same({ W.OP.pong, "p" .. i }, { op, payload })
      end
      local _, payload = W.read_frame(conn)
      assert.equal("12345", payload)
      assert.equal(1000, W.close(conn))
    end)
    case("empty fragments around data", function(port)
      expect_echo(port, W.frame("text", "", { fin = false }) .. W.frame("cont", "mid", { fin = false }) ..
        W.frame("cont", ""), "text", "mid")
    end)
    case("all fragments empty make an empty message", function(port)
      expect_echo(port, W.frame("binary", "", { fin = false }) .. W.frame("cont", "", { fin = false }) ..
        W.frame("cont", ""), "binary", "")
    end)
    case("a continuation without a message fails with 1002", function(port)
      expect_failure(port, W.frame("cont", "orphan"), 1002)
    end)
    case("a non-final continuation without a message fails with 1002", function(port)
      expect_failure(port, W.frame("cont", "orphan", { fin = false }), 1002)
    end)
    case("a text frame inside a fragmented message fails with 1002", function(port)
      expect_failure(port, W.frame("text", "a", { fin = false }) .. W.frame("text", "b"), 1002)
    end)
    case("a binary frame inside a fragmented message fails with 1002", function(port)
      expect_failure(port, W.frame("binary", "a", { fin = false }) .. W.frame("binary", "b"), 1002)
    end)
    case("a continuation after a complete message fails with 1002", function(port)
      local conn = open(port)
      conn:write(W.frame("text", "whole") .. W.frame("cont", "extra"))
      local _, payload = W.read_frame(conn)
      assert.equal("whole", payload)
      assert.equal(1002, (W.read_close(conn)))
      assert.is_true(W.closed(conn))
    end)
  end)

  describe("6 UTF-8 handling", function()
    local valid = {
      { "ASCII", "Hello, world" },
      { "two-byte", "\xc2\xa9 caf\xc3\xa9" },
      { "three-byte", "\xe2\x82\xac \xe4\xb8\xad\xe6\x96\x87" },
      { "four-byte", "\xf0\x9f\x98\x80 \xf0\x90\x8d\x88" },
      { "the Greek test string", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" },
      { "U+0000", "a\0b" },
      { "U+007F", "\x7f" },
      { "U+0080", "\xc2\x80" },
      { "U+07FF", "\xdf\xbf" },
      { "U+0800", "\xe0\xa0\x80" },
      { "U+D7FF (last before surrogates)", "\xed\x9f\xbf" },
      { "U+E000 (first after surrogates)", "\xee\x80\x80" },
      { "U+FFFD", "\xef\xbf\xbd" },
      { "U+FFFF", "\xef\xbf\xbf" },
      { "U+10000", "\xf0\x90\x80\x80" },
      { "U+10FFFF", "\xf4\x8f\xbf\xbf" },
      { "a byte order mark", "\xef\xbb\xbfBOM" },
    }
    for _, v in ipairs(valid) do
      case("valid " .. v[1] .. " text is echoed", function(port)
        expect_echo(port, W.frame("text", v[2]), "text", v[2])
      end)
    end
    local invalid = {
      { "a lone continuation byte", "\x80" },
      { "a continuation byte after ASCII", "abc\xbf" },
      { "0xFE", "\xfe" },
      { "0xFF", "\xff" },
      { "0xC0 (overlong lead)", "\xc0\x80" },
      { "0xC1 (overlong lead)", "\xc1\xbf" },
      { "an overlong three-byte slash", "\xe0\x80\xaf" },
      { "an overlong four-byte slash", "\xf0\x80\x80\xaf" },
      { "a high surrogate", "\xed\xa0\x80" },
      { "a low surrogate", "\xed\xbf\xbf" },
      { "a surrogate pair", "\xed\xa0\x80\xed\xb0\x80" },
      { "U+110000", "\xf4\x90\x80\x80" },
      { "0xF5", "\xf5\x80\x80\x80" },
      { "a truncated two-byte sequence", "a\xc2" },
      { "a truncated three-byte sequence", "a\xe2\x82" },
      { "a truncated four-byte sequence", "a\xf0\x9f\x98" },
      { "a lead byte followed by ASCII", "\xe2a\x82" },
      { "the Greek string with a bad byte", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited" },
    }
    for _, v in ipairs(invalid) do
      case("invalid text (" .. v[1] .. ") fails with 1007", function(port)
        expect_failure(port, W.frame("text", v[2]), 1007)
      end)
    end
    local greek = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
    for cut = 1, #greek - 1 do
      case(("valid text split across two fragments at byte %d"):format(cut), function(port)
        expect_echo(port, W.frame("text", greek:sub(1, cut), { fin = false }) ..
          W.frame("cont", greek:sub(cut + 1)), "text", greek)
      end)
    end
    case("valid text in one-byte fragments", function(port)
      local frames = {}
      for i = 1, #greek do
        frames[i] = W.frame(i == 1 and "text" or "cont", greek:sub(i, i), { fin = i == #greek })
      end
      expect_echo(port, table.concat(frames), "text", greek)
    end)
    case("invalid text fails at once, before the message ends", function(port)
      local conn = open(port)
      conn:write(W.frame("text", "ok \xed\xa0\x80", { fin = false }))
      assert.equal(1007, (W.read_close(conn)))
      assert.is_true(W.closed(conn))
    end)
    case("a sequence cut by the end of a fragmented message fails with 1007", function(port)
      expect_failure(port, W.frame("text", "a", { fin = false }) .. W.frame("cont", "\xe2\x82"), 1007)
    end)
    case("invalid bytes in a binary message are fine", function(port)
      expect_echo(port, W.frame("binary", "\xff\xfe\xed\xa0\x80"), "binary", "\xff\xfe\xed\xa0\x80")
    end)
    case("an invalid close reason fails with 1007", function(port)
      expect_failure(port, W.frame("close", W.close_payload(1000, "\xff")), 1007)
    end)
  end)

  describe("7 closing handshake", function()
    for _, code in ipairs({ 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
      3000, 3999, 4000, 4999 }) do
      case(("a close with code %d is answered with the same code"):format(code), function(port)
        local conn = open(port)
        conn:write(W.frame("close", W.close_payload(code, "bye")))
        assert.equal(code, (W.read_close(conn)))
        assert.is_true(W.closed(conn))
        conn:close()
      end)
    end
    for _, code in ipairs({ 0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535 }) do
      case(("a close with invalid code %d fails with 1002"):format(code), function(port)
        expect_failure(port, W.frame("close", W.close_payload(code)), 1002)
      end)
    end
    case("a close without a payload is answered without a code", function(port)
      local conn = open(port)
      conn:write(W.frame("close", ""))
      assert.equal(1005, (W.read_close(conn)))
      assert.is_true(W.closed(conn))
    end)
    case("a close with a 1-byte payload fails with 1002", function(port)
      expect_failure(port, W.frame("close", "\x03"), 1002)
    end)
    case("a close with a 123-byte reason is answered", function(port)
      local conn = open(port)
      conn:write(W.frame("close", W.close_payload(1000, rep("r", 123))))
      assert.equal(1000, (W.read_close(conn)))
      assert.is_true(W.closed(conn))
    end)
    case("a close with a 124-byte reason (126-byte frame) fails with 1002", function(port)
      expect_failure(port, W.frame("close", W.close_payload(1000, rep("r", 124))), 1002)
    end)
    case("data after the close frame is ignored", function(port)
      local conn = open(port)
      conn:write(W.frame("close", W.close_payload(1000)) .. W.frame("text", "late") ..
        W.frame("ping", "late"))
      local op = W.read_frame(conn)
      assert.equal(W.OP.close, op)
      assert.is_true(W.closed(conn))
    end)
    case("a close in the middle of a fragmented message is answered", function(port)
      local conn = open(port)
      conn:write(W.frame("text", "half", { fin = false }) .. W.frame("close", W.close_payload(1000)))
      assert.equal(1000, (W.read_close(conn)))
      assert.is_true(W.closed(conn))
    end)
    case("the handler's receive reports the peer's code and reason", function(port)
      local conn = open(port, "/watch")
      conn:write(W.frame("close", W.close_payload(4321, "done here")))
      assert.equal(4321, (W.read_close(conn)))
      W.closed(conn)
      srv.sleep(0.05)
      local c2 = W.connect_raw(port)
      c2:write("GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local resp = c2:read("a")
      assert.matches("closed|4321|done here", resp, 1, true)
    end)
    case("the handler's receive reports 1006 when the peer vanishes", function(port)
      local conn = open(port, "/watch")
      conn:write(W.frame("text", "x", { fin = false }))
      conn:close()
      srv.sleep(0.1)
      local c2 = W.connect_raw(port)
      c2:write("GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert.matches("closed|1006|", c2:read("a"), 1, true)
    end)
    for _, v in ipairs({ { 1000, "" }, { 1001, "going" }, { 4000, "app code" } }) do
      case(("ws:close(%d) sends the code and waits for the answer"):format(v[1]), function(port)
        local conn = open(port, "/close")
        conn:write(W.frame("text", v[1] .. " " .. v[2]))
        local code, reason = W.read_close(conn)
        assert.same({ v[1], v[2] }, { code, reason })
        conn:write(W.frame("close", W.close_payload(v[1])))
        assert.is_true(W.closed(conn))
      end)
    end
    case("a server-side close is bounded when the client never answers", function(port)
      local conn = open(port, "/close")
      conn:write(W.frame("text", "1000"))
      assert.equal(1000, (W.read_close(conn)))
      -- No close frame back: the server still closes the connection (close_timeout).
      conn:settimeout(10)
      assert.is_true(W.closed(conn))
    end)
    case("a failing handler closes with 1011", function(port)
      local conn = open(port, "/fail")
      conn:write(W.frame("text", "go"))
      assert.equal(1011, (W.read_close(conn)))
      conn:write(W.frame("close", W.close_payload(1011)))
      assert.is_true(W.closed(conn))
    end)
    case("an idle connection is closed with 1001", function(port)
      local conn = open(port, "/idle")
      local code, reason = W.read_close(conn)
      assert.same({ 1001, "idle timeout" }, { code, reason })
      conn:write(W.frame("close", W.close_payload(1001)))
      assert.is_true(W.closed(conn))
    end)
    case("input keeps a connection with an idle timeout open", function(port)
      local conn = open(port, "/idle")
      for i = 1, 5 do
        srv.sleep(0.15)
        local _, payload = W.echo(conn, "text", "keep " .. i)
        assert.equal("keep " .. i, payload)
      end
      assert.equal(1000, W.close(conn))
    end)
    case("receive with a timeout returns nil, 'timeout'", function(port)
      local conn = open(port, "/timeout")
      local _, payload = W.read_frame(conn)
      assert.equal("nil timeout", payload)
      assert.equal(1000, W.close(conn))
    end)
  end)

  describe("9 limits and performance", function()
    case("a message at max_message is echoed", function(port)
      local conn = open(port, "/small")
      local _, payload = W.echo(conn, "binary", rep("x", 1000))
      assert.equal(1000, #payload)
      assert.equal(1000, W.close(conn))
    end)
    case("a frame over max_message fails with 1009", function(port)
      expect_failure(port, W.frame("binary", rep("x", 1001)), 1009, "/small")
    end)
    case("fragments adding up past max_message fail with 1009", function(port)
      expect_failure(port, W.frame("text", rep("x", 600), { fin = false }) ..
        W.frame("cont", rep("x", 600)), 1009, "/small")
    end)
    case("a frame header announcing 2^40 bytes fails with 1009 at once", function(port)
      expect_failure(port, char(0x82, 0xff, 0, 0, 1, 0, 0, 0, 0, 0) .. "abcd", 1009)
    end)
    case("the default limit takes a 1 MiB message", function(port)
      local conn = open(port)
      local data = pattern(1024 * 1024)
      conn:settimeout(20)
      conn:write(W.frame("binary", data))
      local _, payload = W.read_frame(conn)
      assert.equal(#data, #payload)
      assert.equal(data, payload)
      assert.equal(1000, W.close(conn))
    end)
    case("the default limit refuses 1 MiB + 1 with 1009", function(port)
      expect_failure(port, char(0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 1) .. "abcd", 1009)
    end)
    case("1000 small messages in one burst are all echoed in order", function(port)
      burst(port, 1000)
    end)
    case("a server flooding a slow reader sends everything", function(port)
      local conn = open(port, "/flood")
      conn:write(W.frame("text", "20000"))
      srv.sleep(0.2) -- let the server fill its queue and wait
      for i = 1, 20000 do
        local _, payload = W.read_frame(conn)
        assert.equal("message " .. i, payload)
      end
      assert.equal(1000, W.close(conn))
    end)
  end)

  describe("opening handshake", function()
    local function raw(port, request)
      local conn = W.connect_raw(port)
      conn:write(request)
      local status, headers = W.read_head(conn)
      conn:close()
      return status, headers
    end
    case("the Accept value is RFC 6455's example", function(port)
      local conn, headers = open(port)
      assert.equal("websocket", headers.upgrade:lower())
      assert.equal("upgrade", headers.connection:lower())
      assert.is_nil(headers["sec-websocket-protocol"])
      conn:close()
    end)
    case("header values are matched without regard to case and lists", function(port)
      local req = W.request("/echo"):gsub("Upgrade: websocket", "Upgrade: WebSocket")
        :gsub("Connection: Upgrade", "Connection: keep-alive, UPGRADE")
      local status = raw(port, req)
      assert.equal(101, status)
    end)
    case("a handshake with a body is 400", function(port)
      assert.equal(400, (raw(port, W.request("/echo", { "Content-Length: 5" }) .. "abcde")))
    end)
    case("a missing key is 400", function(port)
      assert.equal(400, (raw(port, W.request("/echo"):gsub("Sec%-WebSocket%-Key: [^\r]*\r\n", ""))))
    end)
    case("a key that is not 16 bytes in base64 is 400", function(port)
      assert.equal(400, (raw(port, W.request("/echo"):gsub(W.KEY:gsub("%p", "%%%0"), "c2hvcnQ="))))
    end)
    case("another version is 426 with Sec-WebSocket-Version: 13", function(port)
      local status, headers = raw(port, W.request("/echo"):gsub("Version: 13", "Version: 8"))
      assert.equal(426, status)
      assert.equal("13", headers["sec-websocket-version"])
    end)
    case("a plain GET on a WebSocket route is 426", function(port)
      local status, headers = raw(port, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equal(426, status)
      assert.equal("websocket", headers.upgrade)
    end)
    case("a POST on a WebSocket route is 405", function(port)
      assert.equal(405, (raw(port, W.request("/echo"):gsub("^GET", "POST"))))
    end)
    case("an unknown path is 404", function(port)
      assert.equal(404, (raw(port, W.request("/nowhere"))))
    end)
    case("plain HTTP still works next to WebSocket routes", function(port)
      local conn = W.connect_raw(port)
      conn:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert.matches("plain http$", conn:read("a"))
    end)
    case("the server's preferred subprotocol among the client's is chosen", function(port)
      local conn, headers = open(port, "/proto", { "Sec-WebSocket-Protocol: chat, chat.v2" })
      assert.equal("chat.v2", headers["sec-websocket-protocol"])
      local _, payload = W.read_frame(conn)
      assert.equal("chat.v2", payload)
      assert.equal(1000, W.close(conn))
    end)
    case("subprotocols offered in repeated fields are seen", function(port)
      local conn, headers = open(port, "/proto", { "Sec-WebSocket-Protocol: other",
        "Sec-WebSocket-Protocol: chat" })
      assert.equal("chat", headers["sec-websocket-protocol"])
      conn:close()
    end)
    case("no common subprotocol: none is named", function(port)
      local conn, headers = open(port, "/proto", { "Sec-WebSocket-Protocol: mqtt" })
      assert.is_nil(headers["sec-websocket-protocol"])
      local _, payload = W.read_frame(conn)
      assert.equal("(none)", payload)
      conn:close()
    end)
    case("an allowed Origin opens", function(port)
      local conn = open(port, "/origin", { "Origin: https://good.example" })
      assert.equal(1000, W.close(conn))
    end)
    case("another Origin is 403", function(port)
      assert.equal(403, (raw(port, W.request("/origin", { "Origin: https://evil.example" }))))
    end)
    case("no Origin is 403 where origins are listed", function(port)
      assert.equal(403, (raw(port, W.request("/origin"))))
    end)
    case("the handler sees the request: path, query and headers", function(port)
      local conn = open(port, "/info?who=me", { "Origin: https://site.example", "User-Agent: spec" })
      local _, payload = W.read_frame(conn)
      assert.same({ path = "/info", who = "me", origin = "https://site.example", agent = "spec" },
        srv.json.decode(payload))
      assert.equal(1000, W.close(conn))
    end)
    case("methods on something else than a WebSocket raise; the iterator keeps its socket", function(port)
      local conn = open(port, "/misuse")
      local _, payload = W.read_frame(conn)
      local r = srv.json.decode(payload)
      for _, what in ipairs({ "table", "fake", "file", "receive" }) do
        assert.matches("luasrv.WebSocket expected", r[what], 1, true)
      end
      assert.matches("invalid option 'texts'", r.kind, 1, true)
      local op, data = W.echo(conn, 1, "one")
      assert.same({ 1, "one" }, { op, data })
      op, data = W.echo(conn, 2, "\0\1")
      assert.same({ 2, "\0\1" }, { op, data })
      assert.equal(1000, W.close(conn))
    end)
    case("fields set before the upgrade go out with the 101", function(port)
      local conn, headers = open(port, "/cookie")
      assert.equal("seen=1", headers["set-cookie"])
      assert.equal(1000, W.close(conn))
    end)
  end)
end)
