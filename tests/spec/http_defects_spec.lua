-- Regressions for parser defects found by using and attacking the server: each case failed
-- before its fix. Raw bytes over TCP against tests/fixtures/http_app.lua.
local srv = require "luasrv"
local H = require "http_helper"

local function inspect(r)
  return require("cjson").decode(r.body)
end

describe("HTTP parser defects", function()
  local port, server
  local life = H.serve("http_app.lua", function(s) server, port = s, s.port end)
  setup(life.setup)
  teardown(life.teardown)
  after_each(life.check)

  local function refused(bytes, status)
    srv.run(function()
      local r, closed, why = H.exchange_then_close(port, bytes)
      assert.equal(status, r.status)
      assert.is_true(closed, why)
    end)
  end

  it("takes an empty header value as \"\" (RFC 9110 §5.5)", function()
    srv.run(function()
      for _, line in ipairs({ "X-Empty:\r\n", "X-Empty: \r\n", "X-Empty:\t \r\n" }) do
        local r = H.exchange(port, H.get("/inspect", line .. "X-Test: after\r\n"))
        assert.equal(200, r.status)
        local seen = inspect(r)
        assert.equal("", seen.headers["x-empty"])
        assert.equal("after", seen.headers["x-test"]) -- the next line is its own header
      end
    end)
  end)

  it("refuses an empty header name with 400", function()
    refused(H.get("/inspect", ": v\r\n"), 400)
    refused(H.get("/inspect", ":\r\n"), 400)
  end)

  it("answers Transfer-Encoding: gzip without chunked with 400 at once, then closes", function()
    refused("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400)
    refused("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400)
    refused("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n" ..
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400)
  end)

  it("refuses codings it does not apply before chunked with 501", function()
    refused("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" ..
            "3\r\nabc\r\n0\r\n\r\n", 501)
    refused("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity, chunked\r\n\r\n" ..
            "3\r\nabc\r\n0\r\n\r\n", 501)
  end)

  it("refuses Transfer-Encoding in an HTTP/1.0 request with 400", function()
    refused("POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400)
  end)

  it("answers bytes that are not HTTP with 400, and the HTTP/2 preface with 505", function()
    refused("\22\3\1\2\0\1\0\1\252\3\3" .. ("x"):rep(40), 400)       -- a TLS ClientHello
    refused("\0\0\0\0garbage\r\n\r\n", 400)
    refused("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505)
    refused("FROB / HTTP/1.1\r\nHost: t\r\n\r\n", 501)                  -- a method, unknown
  end)

  it("answers garbage after a valid request with 400 after the first answer", function()
    srv.run(function()
      local c = H.connect(port)
      c:send(H.get("/hello") .. "\22\3\1garbage\r\n\r\n")
      local first = assert(c:response())
      assert.equal(200, first.status)
      local second = assert(c:response())
      assert.equal(400, second.status)
      assert.is_true(c:expect_close(3))
      c:close()
    end)
  end)

  it("ignores an Upgrade it does not take: the connection goes on as HTTP/1.1", function()
    srv.run(function()
      local c = H.connect(port)
      c:send(H.get("/hello", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" ..
                              "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n") .. H.get("/hello"))
      for _ = 1, 2 do
        local r = assert(c:response())
        assert.equal(200, r.status)
        assert.equal("hello", r.body)
      end
      -- and later requests on it too
      c:send(H.get("/hello"))
      assert.equal(200, assert(c:response()).status)
      c:close()
    end)
  end)

  it("curl --http2 against two URLs gets two 200s", function()
    srv.run(function()
      local base = "http://127.0.0.1:" .. port
      local p = io.popen(("env LD_PRELOAD= curl -s --http2 -w ' %%{http_code};' %s/hello %s/seq?n=2 2>&1")
        :format(base, base))
      local out = p:read("a")
      p:close()
      assert.equal("hello 200;seq 2 200;", out)
    end)
  end)

  it("accepts any number of chunk extensions (RFC 9112 §7.1.1)", function()
    srv.run(function()
      local body = "3;foo=bar;baz=qux\r\nabc\r\n2;a;b=\"q;\\\"x\";c=d\r\nde\r\n0;end=1\r\n\r\n"
      local r = H.exchange(port, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" ..
        body)
      assert.equal(200, r.status)
      assert.equal("abcde", r.body)
      -- split byte by byte, the same
      local c = H.connect(port)
      local bytes = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" .. body
      for i = 1, #bytes do c:send(bytes:sub(i, i)) end
      r = assert(c:response())
      assert.equal("abcde", r.body)
      c:close()
    end)
  end)

  it("refuses malformed chunk extensions and counts them against the limits", function()
    local head = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    refused(head .. "3;foo=\r\nabc\r\n0\r\n\r\n", 400)
    refused(head .. "3; foo\r\nabc\r\n0\r\n\r\n", 400)
    refused(head .. "3;=x\r\nabc\r\n0\r\n\r\n", 400)
    -- an extension longer than a chunk line may be is refused before it is all read
    srv.run(function()
      local c = H.connect(port)
      c:send(head .. "3;x=" .. ("y"):rep(64 * 1024))
      local r = assert(c:response())
      assert.equal(400, r.status)
      c:close()
    end)
  end)

  it("cuts a long request target in the error log, as the access log does", function()
    srv.run(function()
      local long = "/r/header-then-error?" .. ("q"):rep(7000) .. "END"
      assert.equal(500, H.exchange(port, H.get(long)).status)
      local line
      H.wait_for(function()
        line = server:stderr():match("[^\n]*/r/header%-then%-error[^\n]*")
        return line ~= nil
      end, 5)
      assert.is_true(#line < 1200, "error log line of " .. #line .. " bytes")
      assert.matches("q%.%.%.: ", line)
      assert.falsy(line:find("END", 1, true))
    end)
  end)

  it("logs the client's address even when the client left before the answer", function()
    srv.run(function()
      -- The client resets the connection (SO_LINGER 0): getpeername fails from then on.
      local py = ("import socket, struct, time; s = socket.create_connection(('127.0.0.1', %d)); " ..
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); " ..
        "s.sendall(b'GET /seq?n=gone&ms=300 HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n'); time.sleep(0.1); s.close()")
        :format(port)
      assert.is_true(os.execute("python3 -c " .. H.helper.shell_quote(py)))
      local line
      H.wait_for(function()
        line = server:stdout():match("[^\n]*/seq%?n=gone[^\n]*")
        return line ~= nil
      end, 5)
      assert.matches("^127%.0%.0%.1 ", line)
    end)
  end)
end)
