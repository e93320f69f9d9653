-- srv.ws.connect, the WebSocket client: against luasrv's own server (tests/fixtures/ws_app.lua,
-- plain and over TLS) and against an independent, strict one (python3-websockets,
-- tests/fixtures/ws_python_server.py), which refuses unmasked frames from a client.
local srv = require "luasrv"
local helper = require "helper"
local W = require "ws_helper"
local T = require "tls_helper"

-- Starts the Python server; returns its port and a function that stops it.
local function start_python()
  local out = helper.tmpname(".out")
  local proc = assert(io.popen(("echo $$; exec %s %s >%s 2>&1"):format(W.PYTHON,
    helper.path("tests/fixtures/ws_python_server.py"), out)))
  local pid = assert(tonumber(proc:read("l")))
  local port
  for _ = 1, 200 do
    port = tonumber((helper.read_file(out) or ""):match("listening on ws://127%.0%.0%.1:(%d+)"))
    if port then break end
    os.execute("sleep 0.05")
  end
  local function stop()
    os.execute("kill " .. pid .. " 2>/dev/null")
    proc:close()
    os.remove(out)
  end
  if not port then
    stop()
    error("the Python server did not start: " .. (helper.read_file(out) or ""))
  end
  return port, stop
end

describe("srv.ws.connect", function()
  local server = W.fixture_hooks(setup, teardown)

  local function url(path) return ("ws://127.0.0.1:%d%s"):format(server.port, path) end

  it("echoes text, binary and large messages with luasrv's server", function()
    srv.run(function()
      local ws = assert(srv.ws.connect(url("/echo"), { timeout = 5 }))
      assert.equal(ws, ws:send("hello"))
      assert.same({ "hello", "text" }, { ws:receive(5) })
      ws:send("\0\1\2", "binary")
      assert.same({ "\0\1\2", "binary" }, { ws:receive(5) })
      local big = string.rep("0123456789", 50000)
      ws:send(big)
      local got = ws:receive(5)
      assert.equal(#big, #got)
      assert.equal(big, got)
      assert.is_true(ws:close())
      assert.same({ nil, "closed", 1000, "" }, { ws:receive() })
    end)
  end)

  it("gets the server's close code and reason, and answers them", function()
    srv.run(function()
      local ws = assert(srv.ws.connect(url("/close")))
      ws:send("4005 server says bye")
      assert.same({ nil, "closed", 4005, "server says bye" }, { ws:receive(5) })
    end)
  end)

  it("sends its own close code and reason", function()
    srv.run(function()
      local ws = assert(srv.ws.connect(url("/watch")))
      ws:close(4321, "done here")
    end)
    srv.run(function()
      local c = W.connect_raw(server.port)
      c:write("GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert.matches("closed|4321|done here", c:read("a"), 1, true)
    end)
  end)

  it("negotiates a subprotocol and sends extra headers", function()
    srv.run(function()
      local ws = assert(srv.ws.connect(url("/info?who=client"), {
        headers = { ["User-Agent"] = "luasrv-spec", Origin = "https://spec.example" } }))
      local info = srv.json.decode((ws:receive(5)))
      assert.same({ path = "/info", who = "client", origin = "https://spec.example",
        agent = "luasrv-spec" }, info)
      ws:close()
      local ws2 = assert(srv.ws.connect(url("/proto"), { subprotocols = { "chat" } }))
      assert.equal("chat", ws2:protocol())
      ws2:close()
    end)
  end)

  it("reports a refused handshake and a refused connection", function()
    srv.run(function()
      local ws, err, code = srv.ws.connect(url("/nowhere"))
      assert.is_nil(ws)
      assert.equal("websocket: the server answered HTTP/1.1 404 Not Found", err)
      assert.equal("EHANDSHAKE", code)
      ws, err = srv.ws.connect(("ws://127.0.0.1:%d/echo"):format(helper.free_tcp_ports(1)[1]))
      assert.is_nil(ws)
      assert.equal("connection refused", err)
    end)
  end)

  it("raises for a bad URL or option", function()
    assert.has_error(function() srv.ws.connect("http://example.com/") end)
    assert.has_error(function() srv.ws.connect("ws://") end)
    assert.has_error(function() srv.ws.connect("ws://h/", { timeout = "5" }) end)
    assert.has_error(function() srv.ws.connect("ws://h/", { bogus = 1 }) end)
  end)

  it("times out a receive, and stays open", function()
    srv.run(function()
      local ws = assert(srv.ws.connect(url("/echo")))
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { ws:receive(0.1) })
      ws:send("still here")
      assert.equal("still here", (ws:receive(5)))
      ws:close()
    end)
  end)

  describe("with python3-websockets' server", function()
    local port, stop
    setup(function() port, stop = start_python() end)
    teardown(function() if stop then stop() end end)

    local function purl(path) return ("ws://127.0.0.1:%d%s"):format(port, path) end

    it("is accepted: masked frames, echo, headers and subprotocol", function()
      srv.run(function()
        local ws = assert(srv.ws.connect(purl("/room"), { subprotocols = { "v2", "v9" },
          headers = { ["X-Test"] = "yes" } }))
        assert.equal("v2", ws:protocol())
        ws:send("headers")
        assert.same({ x_test = "yes", protocols = "v2, v9", path = "/room", chosen = "v2" },
          srv.json.decode((ws:receive(5))))
        for _, m in ipairs({ "short", string.rep("y", 70000), "κόσμε" }) do
          ws:send(m)
          assert.equal(m, (ws:receive(5)))
        end
        ws:send("\255\0", "binary")
        assert.same({ "\255\0", "binary" }, { ws:receive(5) })
        ws:close()
      end)
    end)

    it("reassembles a fragmented message and answers the server's ping", function()
      srv.run(function()
        local ws = assert(srv.ws.connect(purl("/")))
        ws:send("fragments")
        assert.same({ "fragmented", "text" }, { ws:receive(5) })
        ws:send("ping")
        assert.equal("pong seen", (ws:receive(5)))
        ws:close()
      end)
    end)

    it("completes the close the server starts", function()
      srv.run(function()
        local ws = assert(srv.ws.connect(purl("/")))
        ws:send("close 4100 py bye")
        assert.same({ nil, "closed", 4100, "py bye" }, { ws:receive(5) })
      end)
    end)
  end)

  describe("over TLS (wss://)", function()
    local ca, tls_server
    setup(function()
      ca = T.new_ca()
      local cert, key = ca.issue("server")
      tls_server = helper.start(helper.path("tests/fixtures/ws_app.lua"), { args = { "0", cert, key } })
    end)
    teardown(function()
      if tls_server then tls_server:cleanup() end
      if ca then ca.cleanup() end
    end)

    it("connects with the CA, and refuses a certificate it cannot verify", function()
      srv.run(function()
        local wss = ("wss://localhost:%d/echo"):format(tls_server.port)
        local ws = assert(srv.ws.connect(wss, { tls = { ca = ca.pem } }))
        ws:send("over tls")
        assert.equal("over tls", (ws:receive(5)))
        ws:close()
        local bad, err = srv.ws.connect(wss)
        assert.is_nil(bad)
        assert.matches("^tls: certificate verify failed", err)
      end)
    end)
  end)
end)
