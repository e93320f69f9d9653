-- HTTP limits and malformed input over raw sockets against the real binary
-- (tests/fixtures/http_limits.lua: listener 1 with the default limits, listener 2 with
-- max_line 100, max_header_size 200, max_headers 4, max_body 50, header_timeout 0.6,
-- keepalive_timeout 0.6, write_timeout 0.5).
local srv = require "luasrv"
local H = require "http_helper"

local TRAILER = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"

describe("http limits", function()
  local server, p1, p2

  setup(function()
    server = H.start("http_limits.lua", { listeners = 2 })
    p1 = tonumber(server.urls[1]:match(":(%d+)$"))
    p2 = tonumber(server.urls[2]:match(":(%d+)$"))
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  after_each(function()
    if server.status == nil then
      assert.is_true(server:alive(), "the server died:\n" .. server:stderr())
    end
  end)

  -- n extra header lines "X-Hn: v" (the Host line comes from H.req).
  local function headers(n, value)
    local t = {}
    for i = 1, n do t[i] = ("X-H%d: %s\r\n"):format(i, value or "v") end
    return table.concat(t)
  end

  describe("defaults", function()
    it("accepts a 7 KiB target and answers 414 to a 9 KiB one", function()
      srv.run(function()
        local ok = H.exchange(p1, H.get("/" .. ("a"):rep(7 * 1024)))
        assert.equal(200, ok.status)
        local r = H.exchange(p1, H.get("/" .. ("a"):rep(9 * 1024)))
        assert.equal(414, r.status)
      end)
    end)

    it("accepts a 10 KiB header section and answers 431 past 16 KiB", function()
      srv.run(function()
        assert.equal(200, H.exchange(p1, H.get("/h", "X-Big: " .. ("b"):rep(10 * 1024) .. "\r\n")).status)
        assert.equal(431, H.exchange(p1, H.get("/h", "X-Big: " .. ("b"):rep(20 * 1024) .. "\r\n")).status)
        -- Many fields that only together pass 16 KiB.
        assert.equal(431, H.exchange(p1, H.get("/h", headers(30, ("c"):rep(600)))).status)
      end)
    end)

    it("accepts 100 header fields and answers 431 to 101", function()
      srv.run(function()
        assert.equal(200, H.exchange(p1, H.get("/h", headers(99))).status)
        assert.equal(431, H.exchange(p1, H.get("/h", headers(100))).status)
      end)
    end)

    it("reads a 1 MiB body", function()
      srv.run(function()
        local r = H.exchange(p1, H.req("POST", "/len", nil, ("z"):rep(1024 * 1024)), { timeout = 10 })
        assert.equal(200, r.status)
        assert.equal("len 1048576", r.body)
      end)
    end)

    it("answers 413 from a Content-Length past 1 MiB before the body is sent", function()
      srv.run(function()
        local c = H.connect(p1, 3)
        c:send("POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 1048577\r\n\r\n")
        local r = c:must_response()
        assert.equal(413, r.status)
        c:close()
      end)
    end)

    it("answers 413 as soon as a chunked body passes 1 MiB", function()
      srv.run(function()
        local c = H.connect(p1, 5)
        local piece = ("y"):rep(512 * 1024)
        c:send("POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        c:send(("%x\r\n%s\r\n"):format(#piece, piece))
        c:send(("%x\r\n%s\r\n"):format(#piece, piece))
        c:send("1\r\ny\r\n") -- 1 MiB + 1, and no last chunk
        local r = c:must_response()
        assert.equal(413, r.status)
        c:close()
      end)
    end)
  end)

  describe("per-listener options", function()
    it("max_line: 414 past 100 bytes of target", function()
      srv.run(function()
        assert.equal(200, H.exchange(p2, H.get("/" .. ("a"):rep(80))).status)
        assert.equal(414, H.exchange(p2, H.get("/" .. ("a"):rep(150))).status)
      end)
    end)

    it("max_header_size: 431 past 200 bytes of header section", function()
      srv.run(function()
        assert.equal(200, H.exchange(p2, H.get("/h", "X-Big: " .. ("b"):rep(120) .. "\r\n")).status)
        assert.equal(431, H.exchange(p2, H.get("/h", "X-Big: " .. ("b"):rep(300) .. "\r\n")).status)
      end)
    end)

    it("max_headers: 431 past 4 fields", function()
      srv.run(function()
        assert.equal(200, H.exchange(p2, H.get("/h", headers(3))).status)
        assert.equal(431, H.exchange(p2, H.get("/h", headers(4))).status)
      end)
    end)

    it("max_body: 413 past 50 bytes, by Content-Length or chunked total", function()
      srv.run(function()
        local r = H.exchange(p2, H.req("POST", "/len", nil, ("z"):rep(50)))
        assert.equal("len 50", r.body)
        local c = H.connect(p2, 3)
        c:send("POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 51\r\n\r\n")
        assert.equal(413, c:must_response().status)
        c:close()
        c = H.connect(p2, 3)
        c:send("POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        c:send(("1e\r\n%s\r\n"):format(("q"):rep(30)))
        srv.sleep(0.05)
        c:send(("1e\r\n%s\r\n"):format(("q"):rep(30))) -- 60 bytes, no last chunk
        assert.equal(413, c:must_response().status)
        c:close()
      end)
    end)

    it("leaves the default listener's limits alone", function()
      srv.run(function()
        assert.equal(200, H.exchange(p1, H.get("/" .. ("a"):rep(150), headers(6, ("b"):rep(60)))).status)
      end)
    end)
  end)

  describe("timeouts", function()
    it("answers 408 and closes a client trickling its head, serving others meanwhile", function()
      srv.run(function()
        local slow = H.spawn(function()
          local c = H.connect(p2, 4)
          local t0 = srv.monotime()
          c:send("GET /slow HTTP/1.1\r\nHost: t\r\nX-Slow: ")
          local got
          -- Trickle a header byte every 50 ms for up to 3 s (well inside the size limits);
          -- stop once something comes back.
          for _ = 1, 60 do
            if not c:send("y") then break end
            c.conn:settimeout(0.05)
            local ok = c:fill()
            if ok or c.eof then got = true break end
          end
          c.conn:settimeout(4)
          local elapsed = srv.monotime() - t0
          assert.is_true(got, "no answer to a head that never ended")
          local r = c:must_response()
          assert.equal(408, r.status)
          assert.is_true(elapsed >= 0.4 and elapsed < 2.5,
            ("408 came after %.2fs (header_timeout is 0.6s)"):format(elapsed))
          local closed, why = c:expect_close(2)
          assert.is_true(closed, why)
          c:close()
        end)
        local fast = H.spawn(function()
          srv.sleep(0.1)
          for i = 1, 5 do
            local t0 = srv.monotime()
            local r = H.exchange(p2, H.get("/fast" .. i))
            assert.equal("ok /fast" .. i, r.body)
            assert.is_true(srv.monotime() - t0 < 0.5, "a normal client waited behind a slow one")
            srv.sleep(0.05)
          end
        end)
        H.join({ slow, fast }, 10)
      end)
    end)

    it("applies header_timeout to the next request on a kept-alive connection", function()
      srv.run(function()
        local c = H.connect(p2, 4)
        c:send(H.get("/first"))
        assert.equal("ok /first", c:must_response().body)
        c:send("GET /second HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        local t0 = srv.monotime()
        local got
        for _ = 1, 60 do
          if not c:send("y") then break end
          c.conn:settimeout(0.05)
          local ok = c:fill()
          if ok or c.eof then got = true break end
        end
        c.conn:settimeout(4)
        local elapsed = srv.monotime() - t0
        assert.is_true(got, "no answer to a second head that never ended")
        local r = c:must_response()
        assert.equal(408, r.status)
        assert.is_true(elapsed >= 0.4 and elapsed < 2.5,
          ("408 came after %.2fs (header_timeout is 0.6s)"):format(elapsed))
        c:close()
      end)
    end)

    it("closes a connection that sends nothing within header_timeout", function()
      srv.run(function()
        local c = H.connect(p2, 3)
        local t0 = srv.monotime()
        local data = c:until_close(3)
        local elapsed = srv.monotime() - t0
        assert.is_not_nil(data, "the idle connection was not closed")
        assert.is_true(elapsed < 2.5, ("closed after %.2fs"):format(elapsed))
        assert.is_true(data == "" or data:match("^HTTP/1%.1 408 ") ~= nil,
          "unexpected bytes on an idle connection: " .. data)
        c:close()
      end)
    end)

    it("closes an idle kept-alive connection after keepalive_timeout", function()
      srv.run(function()
        local c = H.connect(p2, 3)
        c:send(H.get("/one"))
        assert.equal("ok /one", c:must_response().body)
        local t0 = srv.monotime()
        local closed, why = c:expect_close(3)
        local elapsed = srv.monotime() - t0
        assert.is_true(closed, why)
        assert.is_true(elapsed >= 0.3 and elapsed < 2.5,
          ("closed %.2fs after the response (keepalive_timeout is 0.6s)"):format(elapsed))
        c:close()
      end)
    end)

    it("keeps a busy connection open past keepalive_timeout", function()
      srv.run(function()
        local c = H.connect(p2, 3)
        for i = 1, 5 do
          assert.is_true(c:send(H.get("/busy" .. i)), "the connection closed at request " .. i)
          assert.equal("ok /busy" .. i, c:must_response().body)
          srv.sleep(0.3)
        end
        c:close()
      end)
    end)

    it("closes a connection that takes no output for write_timeout", function()
      srv.run(function()
        local c = H.connect(p2, 5)
        c:send(H.get("/big"))
        -- Read nothing: the socket buffers fill and the server's writes stall.
        local ok = H.wait_for(function()
          return server:stderr():find("big: write failed", 1, true) ~= nil
            or server:stderr():find("big: all written", 1, true) ~= nil
        end, 8)
        local err = server:stderr()
        assert.is_true(ok, "the stalled response never ended:\n" .. err)
        assert.is_nil(err:find("big: all written", 1, true), "64 MiB went into unread sockets?")
        local data = c:until_close(10) or c.buf
        assert.is_true(#c.raw < 64 * 1024 * 1024, "the whole response arrived")
        assert.is_true(c.eof, "the connection was not closed")
        c:close()
        assert.is_not_nil(data)
      end)
    end)
  end)

  describe("malformed requests (400, close, nothing parsed after)", function()
    local cases = {
      { "Content-Length with Transfer-Encoding",
        "POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
      { "Transfer-Encoding with Content-Length",
        "POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" },
      { "two different Content-Length fields",
        "POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!" },
      { "two equal Content-Length fields",
        "POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello" },
      { "a Content-Length list",
        "POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello" },
      { "a non-numeric Content-Length",
        "POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n" },
      { "a negative Content-Length",
        "POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n" },
      { "a signed Content-Length",
        "POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello" },
      { "a Content-Length with inner space",
        "POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 1 2\r\n\r\n" },
      { "a Transfer-Encoding whose last coding is not chunked",
        "POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" },
      { "an unknown Transfer-Encoding",
        "POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n" },
      { "a non-hex chunk size",
        "POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n" },
      { "a 0x-prefixed chunk size",
        "POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" },
      { "a negative chunk size",
        "POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n" },
      { "an overflowing chunk size",
        "POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n" },
      { "chunk data longer than its size",
        "POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n" },
      { "an obs-fold continuation line",
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n b\r\n\r\n" },
      { "a bare CR in a header value",
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n" },
      { "a request line ended by a bare CR",
        "GET /hello HTTP/1.1\rHost: t\r\n\r\n" },
      { "a NUL in a header value",
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n" },
      { "a control byte in a header value",
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\1b\r\n\r\n" },
      { "a DEL in a header value",
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\127b\r\n\r\n" },
      { "a NUL in a header name",
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-\0A: b\r\n\r\n" },
      { "whitespace between a header name and the colon",
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n" },
      { "a header line without a colon",
        "GET /hello HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n" },
      { "a missing Host on HTTP/1.1",
        "GET /hello HTTP/1.1\r\nX-A: b\r\n\r\n" },
      { "two Host fields",
        "GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" },
      { "a lower-case HTTP-name in the version",
        "GET /hello http/1.1\r\nHost: t\r\n\r\n" },
      { "a space inside the target",
        "GET /a b HTTP/1.1\r\nHost: t\r\n\r\n" },
    }
    for _, case in ipairs(cases) do
      it("rejects " .. case[1], function()
        srv.run(function()
          local r, closed, why = H.exchange_then_close(p1, case[2] .. TRAILER)
          assert.equal(400, r.status)
          assert.is_true(closed, why)
        end)
      end)
    end
  end)

  describe("framing edge cases", function()

    it("sends Date, Server, Content-Length and Connection: close with a 400", function()
      srv.run(function()
        local r = H.exchange(p1, "GET /hello HTTP/1.1\r\nX-A: b\r\n\r\n")
        assert.equal(400, r.status)
        assert.equal("Bad Request", r.reason)
        assert.is_string(r.headers["date"])
        assert.is_string(r.headers["server"])
        assert.equal(tostring(#r.body), r.headers["content-length"])
        assert.equal("close", (r.headers["connection"] or ""):lower())
      end)
    end)

    it("closes after an HTTP/1.0 request with Transfer-Encoding, even with keep-alive", function()
      -- RFC 9112 6.1: treat the framing as faulty and close after processing the message.
      srv.run(function()
        local c = H.connect(p1, 3)
        c:send("POST /len HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
          .. "3\r\nabc\r\n0\r\n\r\n" .. "GET /smuggled HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        local r = c:must_response()
        assert.is_true(r.status == 400 or r.status == 200, "status " .. r.status)
        local closed, why = c:expect_close(3)
        assert.is_true(closed, why)
        c:close()
      end)
    end)

    it("accepts a horizontal tab inside a header value (not a CTL to reject)", function()
      srv.run(function()
        assert.equal(200, H.exchange(p1, H.get("/tab", "X-Tab: a\tb\r\n")).status)
      end)
    end)

    it("does not require Host on HTTP/1.0", function()
      srv.run(function()
        assert.equal(200, H.exchange(p1, "GET /old HTTP/1.0\r\n\r\n").status)
      end)
    end)

    it("never runs a request smuggled behind Content-Length + Transfer-Encoding", function()
      srv.run(function()
        local c = H.connect(p1, 3)
        c:send("POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
          .. "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: t\r\n\r\n")
        local r = c:must_response()
        assert.are_not.equal(200, r.status)
        local closed, why = c:expect_close(3)
        assert.is_true(closed, why)
        assert.is_nil(c.raw:find("ok /admin", 1, true))
        c:close()
      end)
    end)
  end)

  describe("versions and methods", function()
    for _, v in ipairs({ "2.0", "3.0" }) do
      it("answers 505 to an HTTP/" .. v .. " request line", function()
        srv.run(function()
          local r = H.exchange(p1, "GET /hello HTTP/" .. v .. "\r\nHost: t\r\n\r\n")
          assert.equal(505, r.status)
        end)
      end)
    end

    for _, m in ipairs({ "FROB", "get", "CONNECT" }) do
      it("answers 501 to the method " .. m, function()
        srv.run(function()
          local target = m == "CONNECT" and "test.local:443" or "/hello"
          local r = H.exchange(p1, m .. " " .. target .. " HTTP/1.1\r\nHost: t\r\n\r\n")
          assert.equal(501, r.status)
        end)
      end)
    end
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)
