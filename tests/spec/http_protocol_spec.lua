-- HTTP/1.1 protocol conformance over raw sockets against the real binary
-- (tests/fixtures/http_app.lua): keep-alive, pipelining, chunked request bodies, streamed
-- responses, Expect: 100-continue, HEAD, Connection: close, absolute-form, Date/Server/CL.
local srv = require "luasrv"
local cjson = require "cjson"
local H = require "http_helper"

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9,
                 Oct = 10, Nov = 11, Dec = 12 }

-- Seconds between an IMF-fixdate and now (both read as UTC).
local function date_skew(value)
  local d, mon, y, hh, mm, ss = value:match(
    "^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  assert(d, "Date is not an IMF-fixdate: " .. tostring(value))
  local t = os.time({ year = tonumber(y), month = MONTHS[mon], day = tonumber(d),
                      hour = tonumber(hh), min = tonumber(mm), sec = tonumber(ss) })
  return math.abs(t - os.time(os.date("!*t")))
end

describe("http protocol", function()
  local server, port
  local life = H.serve("http_app.lua", function(s) server, port = s, s.port end)
  setup(life.setup)
  teardown(life.teardown)
  after_each(life.check)

  describe("response heads", function()
    it("answers a GET with a status line, Server, Date, Content-Type and Content-Length", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/hello"))
        assert.equal("1.1", r.version)
        assert.equal(200, r.status)
        assert.equal("OK", r.reason)
        assert.equal("hello", r.body)
        assert.equal("length", r.framing)
        assert.equal("5", r.headers["content-length"])
        assert.equal(1, r.count["content-length"])
        assert.is_nil(r.headers["transfer-encoding"])
        assert.matches("%S", r.headers["server"] or "")
        assert.equal(1, r.count["server"])
        assert.equal(1, r.count["date"])
        assert.is_true(date_skew(r.headers["date"]) <= 5, "Date is off: " .. r.headers["date"])
        assert.matches("^text/html", r.headers["content-type"] or "")
      end)
    end)

    it("sends Content-Length: 0 for an empty body", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/empty"))
        assert.equal(200, r.status)
        assert.equal("0", r.headers["content-length"])
        assert.equal("", r.body)
      end)
    end)

    it("sends neither a body nor Content-Length nor Transfer-Encoding with 204", function()
      srv.run(function()
        local c = H.connect(port)
        c:send(H.get("/nocontent") .. H.get("/seq?n=2"))
        local r = c:must_response()
        assert.equal(204, r.status)
        assert.is_nil(r.headers["content-length"])
        assert.is_nil(r.headers["transfer-encoding"])
        -- The next response starts right after the 204's head.
        local r2 = c:must_response()
        assert.equal("seq 2", r2.body)
        c:close()
      end)
    end)

    it("sets Content-Length to the byte length of a JSON body", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/table"))
        assert.equal(200, r.status)
        assert.equal(tostring(#r.body), r.headers["content-length"])
        assert.same({ a = 1, list = { "x", "y" } }, cjson.decode(r.body))
      end)
    end)
  end)

  describe("keep-alive", function()
    it("serves several requests one after another on one HTTP/1.1 connection", function()
      srv.run(function()
        local c = H.connect(port)
        for i = 1, 3 do
          assert.is_true(c:send(H.get("/seq?n=" .. i)))
          local r = c:must_response()
          assert.equal(200, r.status)
          assert.equal("seq " .. i, r.body)
          assert.is_nil(r.headers["connection"] and r.headers["connection"]:lower():find("close"))
        end
        assert.is_true(c:still_open(0.2), "a kept-alive connection was closed")
        c:close()
      end)
    end)

    it("answers each connection its own, with more idle connections than keep their buffers", function()
      -- The last 64 connections of a listener to go idle keep their buffers between requests
      -- (src/http_server.c, conn_idle); the others give them back. 150 connections, some
      -- closed and some opened between rounds, some with bodies too big to stay warm.
      srv.run(function()
        local conns, next_id = {}, 0
        local function open()
          next_id = next_id + 1
          conns[#conns + 1] = { c = H.connect(port), id = next_id }
        end
        for _ = 1, 150 do open() end
        for round = 1, 3 do
          for i, e in ipairs(conns) do
            local n = e.id * 10 + round
            if i % 7 == 0 then
              local body = ("x"):rep(6000 + n)
              assert.is_true(e.c:send(H.req("POST", "/echo", nil, body)))
              local r = e.c:must_response()
              assert.equal(200, r.status)
              assert.equal(body, r.body)
            else
              assert.is_true(e.c:send(H.get("/seq?n=" .. n)))
              local r = e.c:must_response()
              assert.equal(200, r.status)
              assert.equal("seq " .. n, r.body)
            end
          end
          -- Every third goes away, and as many new ones come.
          local kept = {}
          for i, e in ipairs(conns) do
            if i % 3 == 0 then e.c:close() else kept[#kept + 1] = e end
          end
          conns = kept
          for _ = 1, 50 do open() end
        end
        for _, e in ipairs(conns) do e.c:close() end
      end)
    end)

    it("closes an HTTP/1.0 connection after the response unless keep-alive is asked for", function()
      srv.run(function()
        local r, closed, why = H.exchange_then_close(port, "GET /hello HTTP/1.0\r\n\r\n")
        assert.equal(200, r.status)
        assert.equal("hello", r.body)
        assert.is_true(closed, why)
      end)
    end)

    it("keeps an HTTP/1.0 connection with Connection: keep-alive open", function()
      srv.run(function()
        local c = H.connect(port)
        c:send("GET /seq?n=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        local r = c:must_response()
        assert.equal("seq 1", r.body)
        assert.equal("keep-alive", (r.headers["connection"] or ""):lower())
        c:send("GET /seq?n=2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c:must_response()
        assert.equal("seq 2", r.body)
        c:close()
      end)
    end)

    it("answers Connection: close, closes, and ignores a request pipelined behind it", function()
      srv.run(function()
        local r, closed, why = H.exchange_then_close(port,
          H.get("/seq?n=1", "Connection: close\r\n") .. H.get("/seq?n=2"))
        assert.equal("seq 1", r.body)
        assert.equal("close", (r.headers["connection"] or ""):lower())
        assert.is_true(closed, why)
      end)
    end)

    it("skips a request body the handler did not read (it is never parsed as a request)", function()
      srv.run(function()
        local c = H.connect(port)
        local smuggled = H.get("/seq?n=666")
        c:send(H.req("POST", "/hello", nil, smuggled) .. H.get("/seq?n=2"))
        local r1 = c:must_response()
        assert.equal("hello", r1.body)
        local r2 = c:must_response()
        assert.equal("seq 2", r2.body)
        local ok = c:still_open(0.2)
        assert.is_true(ok, "after two responses the connection should wait for more")
        c:close()
      end)
    end)

    it("answers pipelined requests from a client that half-closed after sending them", function()
      srv.run(function()
        local c = H.connect(port)
        c:send(H.get("/seq?n=1&ms=30") .. H.get("/seq?n=2") .. H.get("/seq?n=3", "Connection: close\r\n"))
        c.conn:shutdown()
        for i = 1, 3 do
          assert.equal("seq " .. i, c:must_response().body)
        end
        local closed, why = c:expect_close(3)
        assert.is_true(closed, why)
        c:close()
      end)
    end)

    it("parses a request that arrives in several small pieces", function()
      srv.run(function()
        local c = H.connect(port)
        local bytes = H.get("/seq?n=7", "X-Some: thing\r\n")
        local step = math.ceil(#bytes / 5)
        for i = 1, #bytes, step do
          c:send(bytes:sub(i, i + step - 1))
          srv.sleep(0.02)
        end
        local r = c:must_response()
        assert.equal("seq 7", r.body)
        c:close()
      end)
    end)
  end)

  describe("pipelining", function()
    it("answers 16 requests sent in one write in request order", function()
      srv.run(function()
        local parts = {}
        for i = 1, 16 do
          -- Earlier requests take longer: a server that ran them at once would answer out of order.
          parts[i] = H.get(("/seq?n=%d&ms=%d"):format(i, (16 - i) * 3))
        end
        local c = H.connect(port)
        c:send(table.concat(parts))
        for i = 1, 16 do
          local r = c:must_response()
          assert.equal(200, r.status)
          assert.equal("seq " .. i, r.body)
        end
        assert.is_true(c:still_open(0.2))
        c:close()
      end)
    end)

    it("answers 1000 pipelined requests in order without losing any", function()
      srv.run(function()
        local parts = {}
        for i = 1, 1000 do parts[i] = H.get("/seq?n=" .. i) end
        local c = H.connect(port)
        local sender = H.spawn(function() c:send(table.concat(parts)) end)
        for i = 1, 1000 do
          local r = c:must_response()
          assert.equal("seq " .. i, r.body)
        end
        H.join({ sender })
        c:close()
      end)
    end)

    it("keeps order across requests with bodies, chunked bodies and HEAD", function()
      srv.run(function()
        local c = H.connect(port)
        c:send(H.req("POST", "/echo", nil, "first body")
          .. H.get("/seq?n=2&ms=20")
          .. "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
          .. H.req("HEAD", "/hello")
          .. H.get("/seq?n=5"))
        assert.equal("first body", c:must_response().body)
        assert.equal("seq 2", c:must_response().body)
        assert.equal("abc", c:must_response().body)
        local head = c:must_response({ head = true })
        assert.equal(200, head.status)
        assert.equal("5", head.headers["content-length"])
        assert.equal("seq 5", c:must_response().body)
        c:close()
      end)
    end)
  end)

  describe("request bodies", function()
    it("reads a Content-Length body", function()
      srv.run(function()
        local r = H.exchange(port, H.req("POST", "/echo", nil, "some bytes\0and more"))
        assert.equal(200, r.status)
        assert.equal("some bytes\0and more", r.body)
      end)
    end)

    it("decodes a chunked body sent in pieces, with an extension and a trailer", function()
      srv.run(function()
        local c = H.connect(port)
        c:send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        srv.sleep(0.02)
        c:send("5;ext=1\r\nhel")
        srv.sleep(0.02)
        c:send("lo\r\n6\r\n world\r\n")
        srv.sleep(0.02)
        c:send("0\r\nX-Trailer: t\r\n\r\n")
        local r = c:must_response()
        assert.equal(200, r.status)
        assert.equal("hello world", r.body)
        assert.equal("11", r.headers["x-body-length"])
        -- The framing ended exactly: the next request on the connection works.
        c:send(H.get("/seq?n=2"))
        assert.equal("seq 2", c:must_response().body)
        c:close()
      end)
    end)

    it("reads a large chunked body made of many chunks", function()
      srv.run(function()
        local c = H.connect(port)
        local parts, expect = {}, {}
        for i = 1, 200 do
          local piece = ("%04d"):format(i):rep(64)
          expect[#expect + 1] = piece
          parts[#parts + 1] = ("%x\r\n%s\r\n"):format(#piece, piece)
        end
        c:send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
          table.concat(parts), "0\r\n\r\n")
        local r = c:must_response()
        assert.equal(200, r.status)
        assert.is_true(r.body == table.concat(expect), "the chunked body came back different")
        c:close()
      end)
    end)
  end)

  describe("streamed responses", function()
    it("are chunked on HTTP/1.1 and the connection stays usable", function()
      srv.run(function()
        local c = H.connect(port)
        c:send(H.get("/stream"))
        local r = c:must_response()
        assert.equal(200, r.status)
        assert.equal("chunked", r.framing)
        assert.is_nil(r.headers["content-length"])
        assert.equal("part1;part2;part3;", r.body)
        assert.equal("text/plain", r.headers["content-type"])
        assert.is_string(r.headers["date"])
        assert.is_string(r.headers["server"])
        c:send(H.get("/seq?n=2"))
        assert.equal("seq 2", c:must_response().body)
        c:close()
      end)
    end)

    it("are delimited by closing the connection on HTTP/1.0", function()
      srv.run(function()
        local c = H.connect(port)
        c:send("GET /stream HTTP/1.0\r\n\r\n")
        local r = c:must_response()
        assert.equal(200, r.status)
        assert.is_nil(r.headers["transfer-encoding"])
        assert.is_nil(r.headers["content-length"])
        assert.equal("close", r.framing)
        assert.equal("part1;part2;part3;", r.body)
        c:close()
      end)
    end)

    it("close an HTTP/1.0 keep-alive connection, since the body can only end at close", function()
      srv.run(function()
        local c = H.connect(port)
        c:send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        local r = c:must_response()
        assert.equal("close", r.framing)
        assert.equal("part1;part2;part3;", r.body)
        assert.is_nil((r.headers["connection"] or ""):lower():find("keep%-alive"))
        c:close()
      end)
    end)
  end)

  describe("Expect", function()
    it("sends 100 Continue before the body is sent, then the final response", function()
      srv.run(function()
        local c = H.connect(port, 3)
        c:send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n")
        local interim, err = c:head()
        assert.is_table(interim, "no 100 Continue before the body: " .. tostring(err))
        assert.equal(100, interim.status)
        c:send("payload")
        local r = c:must_response()
        assert.equal(200, r.status)
        assert.equal("payload", r.body)
        assert.equal(0, #r.interim)
        c:close()
      end)
    end)

    it("works when the body follows the head at once", function()
      srv.run(function()
        local r = H.exchange(port, H.req("POST", "/echo", "Expect: 100-continue\r\n", "now"))
        assert.equal(200, r.status)
        assert.equal("now", r.body)
        assert.is_true(#r.interim <= 1)
      end)
    end)

    it("answers a handler that does not read the body without waiting for it", function()
      srv.run(function()
        local c = H.connect(port, 3)
        c:send("POST /hello HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        local r = c:must_response()
        assert.equal(200, r.status)
        assert.equal("hello", r.body)
        c:close()
      end)
    end)

    it("ignores 100-continue on HTTP/1.0 (no interim response)", function()
      srv.run(function()
        local r = H.exchange(port,
          "POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
        assert.equal(200, r.status)
        assert.equal("abc", r.body)
        assert.equal(0, #r.interim)
      end)
    end)

    it("answers 417 to any other expectation", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/hello", "Expect: something-else\r\n"))
        assert.equal(417, r.status)
        assert.are_not.equal("hello", r.body)
      end)
    end)
  end)

  describe("HEAD", function()
    it("sends the GET headers without a body", function()
      srv.run(function()
        local get = H.exchange(port, H.get("/hello"))
        local c = H.connect(port)
        -- The GET behind it must parse right after the HEAD's head: no body bytes between.
        c:send(H.req("HEAD", "/hello") .. H.get("/seq?n=2"))
        local r = c:must_response({ head = true })
        assert.equal(200, r.status)
        assert.equal(get.headers["content-length"], r.headers["content-length"])
        assert.equal(get.headers["content-type"], r.headers["content-type"])
        local r2 = c:must_response()
        assert.equal("seq 2", r2.body)
        c:close()
      end)
    end)

    it("sends no body chunks for a streamed response", function()
      srv.run(function()
        local c = H.connect(port)
        c:send(H.req("HEAD", "/stream") .. H.get("/seq?n=3"))
        local r = c:must_response({ head = true })
        assert.equal(200, r.status)
        local r2 = c:must_response()
        assert.equal("seq 3", r2.body)
        c:close()
      end)
    end)
  end)

  describe("request targets", function()
    it("accepts the absolute-form and routes on its path and query", function()
      srv.run(function()
        local r = H.exchange(port,
          "GET http://test.local/inspect?a=1 HTTP/1.1\r\nHost: test.local\r\n\r\n")
        assert.equal(200, r.status)
        local info = cjson.decode(r.body)
        assert.equal("/inspect", info.path)
        assert.equal("1", info.query.a)
      end)
    end)

    it("reads an absolute-form target without a path as /", function()
      srv.run(function()
        local r = H.exchange(port, "GET http://test.local HTTP/1.1\r\nHost: test.local\r\n\r\n")
        assert.equal(200, r.status)
        assert.equal("root", r.body)
      end)
    end)
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)
