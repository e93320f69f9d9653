-- The outbound HTTP client (srv.http.request, get, post, pool_stats) against luasrv's own
-- server, a scripted raw server (a luasrv TCP listener that writes exact bytes) for the
-- malformed answers, and HTTPS with a test CA. nginx is in http_client_nginx_spec.lua.
local srv = require "luasrv"
local tls_helper = require "tls_helper"

local upstreams = require "upstream_helper"

-- A raw server (upstream_helper.raw_server) that also checks that each request is HTTP/1.1.
local function raw_server(answer)
  return upstreams.raw_server(function(req, conn, n)
    assert(req.version == "1.1", "bad request line: " .. req.line)
    return answer(req, conn, n)
  end)
end

-- Serves one fixed answer (raw bytes) to every request, closing after it.
local function fixed(bytes)
  return raw_server(function(_, conn) conn:write(bytes) return false end)
end

local stats, run = upstreams.stats, upstreams.run

describe("srv.http client against luasrv's server", function()
  local listener, base
  setup(function()
    local app = srv.http.app()
    app:get("/", function() return "hello" end)
    app:get("/big", function() return string.rep("x", 100000) end)
    app:post("/echo", function(req, res)
      res:header("X-Method", req.method)
      res:header("X-TE", req.headers["transfer-encoding"] or "-")
      res:header("X-CL", req.headers["content-length"] or "-")
      return req:body()
    end)
    app:get("/headers", function(req) return req.headers end)
    app:get("/stream", function(_, res)
      for i = 1, 5 do res:write("piece" .. i .. ";") srv.sleep(0.01) end
    end)
    app:get("/slow", function() srv.sleep(2) return "late" end)
    app:get("/see-other", function(_, res) res:status(303):header("Location", "/headers"):send("") end)
    app:post("/see-other", function(_, res)
      res:status(303):header("Location", "/headers?from=post"):send("")
    end)
    app:get("/loop", function(_, res) res:status(302):header("Location", "/loop"):send("") end)
    app:get("/rel/a/b", function(_, res) res:status(301):header("Location", "../c?q=1"):send("") end)
    app:get("/rel/c", function(req) return "c " .. req.query_string end)
    app:get("/nocontent", function(_, res) res:status(204):send("") end)
    listener = srv.http.listen({ port = 0 }, app)
    local _, port = listener:address()
    base = "http://127.0.0.1:" .. port
  end)
  teardown(function() listener:close() end)

  it("GETs a body, with status, reason, version and case-insensitive headers", function()
    run(function()
      local res = assert(srv.http.get(base .. "/"))
      assert.equal(200, res.status)
      assert.equal("OK", res.reason)
      assert.equal("1.1", res.version)
      assert.equal("hello", res.body)
      assert.equal("5", res.headers["Content-Length"])
      assert.equal("5", res.headers["content-length"])
      assert.same({ "5" }, res:header_values("CONTENT-LENGTH"))
      local big = assert(srv.http.get(base .. "/big"))
      assert.equal(100000, #big.body)
    end)
  end)

  it("POSTs a string with Content-Length and a reader function chunked", function()
    run(function()
      local res = assert(srv.http.post(base .. "/echo", "payload"))
      assert.equal("payload", res.body)
      assert.equal("7", res.headers["x-cl"])
      assert.equal("-", res.headers["x-te"])
      local pieces = { "a", string.rep("b", 70000), "", "c" }
      local i = 0
      res = assert(srv.http.post(base .. "/echo", function()
        i = i + 1
        return pieces[i]
      end))
      assert.equal("a" .. string.rep("b", 70000) .. "c", res.body)
      assert.equal("chunked", res.headers["x-te"])
      -- A reader with a Content-Length of the caller's is sent as it is.
      i = 0
      res = assert(srv.http.request({ method = "PUT", url = base .. "/echo",
        headers = { ["Content-Length"] = "3" }, body = function()
          i = i + 1
          return ({ "x", "yz" })[i]
        end }))
      assert.equal(405, res.status) -- no PUT route; the body was still framed by length
    end)
  end)

  it("raises a body reader's error once its connection is dropped", function()
    run(function()
      local ok, err = pcall(srv.http.post, base .. "/echo", function() error("reader broke") end)
      assert.is_false(ok)
      assert.matches("reader broke", err)
      ok, err = pcall(srv.http.post, base .. "/echo", function() return 42 end)
      assert.is_false(ok)
      assert.matches("body reader returned a number", err)
      assert.equal(0, stats().active)
      assert.equal("x", assert(srv.http.post(base .. "/echo", "x")).body)
    end)
  end)

  it("sends the caller's headers, Host, a User-Agent and lists as repeated fields", function()
    run(function()
      local res = assert(srv.http.get(base .. "/headers", {
        headers = { ["X-One"] = "1", ["X-List"] = { "a", "b" }, ["User-Agent"] = "mine" } }))
      local h = srv.json.decode(res.body)
      assert.equal("1", h["x-one"])
      assert.equal("a, b", h["x-list"])
      assert.equal("mine", h["user-agent"])
      assert.equal(base:match("//(.*)"), h.host)
    end)
  end)

  it("HEAD and 204 have no body; the connection is reused after them", function()
    run(function()
      local res = assert(srv.http.request({ method = "HEAD", url = base .. "/big" }))
      assert.equal(200, res.status)
      assert.equal("", res.body)
      assert.equal("100000", res.headers["content-length"])
      res = assert(srv.http.get(base .. "/nocontent"))
      assert.equal(204, res.status)
      assert.equal("", res.body)
      local counts = stats()
      assert.equal(1, counts.created)
      assert.equal(1, counts.reused)
    end)
  end)

  it("streams a body with res:chunks(), res:read(n) and res:read('a')", function()
    run(function()
      local res = assert(srv.http.get(base .. "/stream", { stream = true }))
      assert.equal(200, res.status)
      assert.is_nil(res.body)
      local got = {}
      for chunk in res:chunks() do got[#got + 1] = chunk end
      assert.equal("piece1;piece2;piece3;piece4;piece5;", table.concat(got))
      res = assert(srv.http.get(base .. "/stream", { stream = true }))
      assert.equal("piec", res:read(4))
      assert.equal("e1;", res:read(3))
      assert.equal("piece2;piece3;piece4;piece5;", res:read("a"))
      assert.is_nil(res:read())
      assert.equal(1, stats().created) -- read to the end: back in the pool
    end)
  end)

  it("drops a streamed connection closed half-read, never reusing it", function()
    run(function()
      local res = assert(srv.http.get(base .. "/big", { stream = true }))
      assert.is_string(res:read(10))
      res:close()
      assert.same({ nil, "closed", "ECLOSED" }, { res:read() })
      local counts = stats()
      assert.equal(0, counts.idle)
      assert.equal(0, counts.active)
      res = assert(srv.http.get(base .. "/"))
      assert.equal("hello", res.body)
      assert.equal(2, stats().created)
      -- A streamed response dropped without close: collected, its connection is closed.
      local function open_and_drop() -- in a frame of its own: nothing refers to it afterwards
        local dropped = assert(srv.http.get(base .. "/big", { stream = true }))
        assert.equal(200, dropped.status)
        assert.equal(1, stats().active)
      end
      open_and_drop()
      collectgarbage()
      collectgarbage()
      assert.equal(0, stats().active)
    end)
  end)

  it("refuses a body over max_body", function()
    run(function()
      assert.same({ nil, "response body too large", "ETOOLARGE" },
        { srv.http.get(base .. "/big", { max_body = 1000 }) })
      -- A streamed body is refused when the limit is reached.
      local res = assert(srv.http.get(base .. "/stream", { stream = true, max_body = 10 }))
      local ok, err = pcall(function() for _ in res:chunks() do end end)
      assert.is_false(ok)
      assert.matches("response body too large", err)
    end)
  end)

  it("times out: total timeout and per-read timeout", function()
    run(function()
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { srv.http.get(base .. "/slow", { timeout = 0.2 }) })
      assert.same({ nil, "timeout", "ETIMEDOUT" },
        { srv.http.get(base .. "/slow", { read_timeout = 0.2 }) })
      assert.equal(0, stats().active)
    end)
  end)

  it("follows redirects only when asked; 303 turns a POST into a GET", function()
    run(function()
      local res = assert(srv.http.get(base .. "/see-other"))
      assert.equal(303, res.status)
      assert.equal("/headers", res.headers.location)
      res = assert(srv.http.post(base .. "/see-other", "data",
        { redirects = 1, headers = { ["Content-Type"] = "text/plain" } }))
      assert.equal(200, res.status)
      assert.equal(base .. "/headers?from=post", res.url)
      local h = srv.json.decode(res.body)
      assert.is_nil(h["content-type"])
      assert.is_nil(h["content-length"])
      res = assert(srv.http.get(base .. "/loop", { redirects = 3 }))
      assert.equal(302, res.status)
      res = assert(srv.http.get(base .. "/rel/a/b", { redirects = 1 }))
      assert.equal("c q=1", res.body)
    end)
  end)

  it("drops Authorization across hosts and keeps it on the same one", function()
    run(function()
      local other = raw_server(function(req, conn)
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: ", #(req.headers.authorization or "none"),
          "\r\n\r\n", req.headers.authorization or "none")
      end)
      local first = raw_server(function(req, conn)
        if req.target == "/same" then
          conn:write("HTTP/1.1 307 Temporary\r\nLocation: /final\r\nContent-Length: 0\r\n\r\n")
        elseif req.target == "/final" then
          conn:write("HTTP/1.1 200 OK\r\nContent-Length: ", #req.headers.authorization, "\r\n\r\n",
            req.headers.authorization)
        else
          conn:write("HTTP/1.1 302 Found\r\nLocation: http://localhost:", other.port,
            "/x\r\nContent-Length: 0\r\n\r\n")
        end
      end)
      local res = assert(srv.http.get(first.url .. "/same", { redirects = 1,
        headers = { Authorization = "Bearer t" } }))
      assert.equal("Bearer t", res.body)
      res = assert(srv.http.get(first.url .. "/away", { redirects = 1,
        headers = { Authorization = "Bearer t" } }))
      assert.equal("none", res.body)
      first.listener:close()
      other.listener:close()
    end)
  end)

  it("serves 100 concurrent requests from handlers without blocking the loop", function()
    run(function()
      local inflight, peak, ticks = 0, 0, 0
      local app = srv.http.app()
      app:get("/wait", function()
        inflight = inflight + 1
        if inflight > peak then peak = inflight end
        local deadline = srv.monotime() + 10
        -- All 100 wait here together, and a timer keeps ticking meanwhile.
        while (peak < 100 or ticks < 3) and srv.monotime() < deadline do srv.sleep(0.01) end
        inflight = inflight - 1
        return "done"
      end)
      local upstream = srv.http.listen({ port = 0 }, app)
      local _, up_port = upstream:address()
      local front = srv.http.app()
      front:get("/fan", function()
        local res, err = srv.http.get("http://127.0.0.1:" .. up_port .. "/wait")
        return res and res.body or ("error " .. tostring(err))
      end)
      local proxy = srv.http.listen({ port = 0 }, front)
      local _, front_port = proxy:address()
      local timer = srv.every(0.005, function()
        if peak == 100 then ticks = ticks + 1 end
      end)
      local results = {}
      for i = 1, 100 do
        srv.after(0, function()
          local res, err = srv.http.get("http://127.0.0.1:" .. front_port .. "/fan")
          results[i] = res and res.body or err
        end)
      end
      local deadline = srv.monotime() + 20
      while #results < 100 and srv.monotime() < deadline do srv.sleep(0.02) end
      timer:cancel()
      for i = 1, 100 do assert.equal("done", results[i]) end
      assert.equal(100, peak)
      assert.is_true(ticks > 2, "the loop kept running timers")
      upstream:close()
      proxy:close()
    end)
  end)
end)

describe("srv.http client against a raw server", function()
  it("keeps repeated fields, reads chunked bodies with trailers and skips 1xx", function()
    run(function()
      local s = fixed("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" ..
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nTransfer-Encoding: chunked\r\n" ..
        "\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Checksum: 42\r\n\r\n")
      local res = assert(srv.http.get(s.url .. "/"))
      assert.equal(200, res.status)
      assert.equal("abcdefg", res.body)
      assert.same({ "a=1", "b=2" }, res:header_values("set-cookie"))
      assert.equal("a=1, b=2", res.headers["Set-Cookie"])
      assert.equal("42", res.trailers["x-checksum"])
      assert.is_nil(res.headers.link)
      s.listener:close()
    end)
  end)

  it("reads chunk extensions (several, with values), also when lines split across reads", function()
    run(function()
      local pieces = { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b;c=\"d e\";f",
        "\r\nabc\r\n", "2", ";x=y\r\nde\r\n0;z\r\n\r\n" }
      local s = raw_server(function(_, conn)
        for _, piece in ipairs(pieces) do conn:write(piece) srv.sleep(0.02) end
      end)
      assert.equal("abcde", assert(srv.http.get(s.url .. "/")).body)
      assert.equal(1, stats().idle) -- the answer ended cleanly: the connection is kept
      s.listener:close()
      local bad = fixed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;a b\r\nabc\r\n0\r\n\r\n")
      assert.same({ nil, "bad response: bad chunk extension", "EPROTO" }, { srv.http.get(bad.url .. "/") })
      bad.listener:close()
    end)
  end)

  it("reads a close-delimited body", function()
    run(function()
      local s = fixed("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
      local res = assert(srv.http.get(s.url .. "/"))
      assert.equal("until the end", res.body)
      assert.equal("1.0", res.version)
      assert.equal(0, stats().idle)
      s.listener:close()
    end)
  end)

  local malformed = {
    { "a bad status line", "HTTP/1.1 2x0 OK\r\n\r\n", "bad response: " },
    { "not HTTP at all", "SSH-2.0-OpenSSH_9.2\r\n", "bad response: " },
    { "a body shorter than its Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
      "bad response: connection closed before the end of the body" },
    { "a head cut short", "HTTP/1.1 200 OK\r\nContent-Le",
      "bad response: connection closed before the end of the head" },
    { "bad chunk framing", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
      "bad response: " },
    { "two different Content-Lengths",
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "bad response: " },
    { "a header line without a colon", "HTTP/1.1 200 OK\r\nBroken\r\n\r\n", "bad response: " },
    { "too many header fields", "HTTP/1.1 200 OK\r\n" .. string.rep("X: y\r\n", 101) .. "\r\n",
      "bad response: too many header fields" },
    { "a header section too large", "HTTP/1.1 200 OK\r\nX: " .. string.rep("v", 17000) .. "\r\n\r\n",
      "bad response: header section too large" },
    { "a 101 that was not asked for", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n" ..
      "Connection: upgrade\r\n\r\n", "bad response: unexpected 101" },
    { "HTTP/2.0 in the status line", "HTTP/2.0 200 OK\r\n\r\n", "bad response: " },
    { "NUL in a header value", "HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 0\r\n\r\n",
      "bad response: " },
  }
  for _, case in ipairs(malformed) do
    it("refuses " .. case[1] .. " and does not reuse the connection", function()
      run(function()
        local s = raw_server(function(_, conn) conn:write(case[2]) return false end)
        local res, err, code = srv.http.get(s.url .. "/")
        assert.is_nil(res)
        assert.equal("EPROTO", code)
        assert.equal(case[3], err:sub(1, #case[3]))
        local counts = stats()
        assert.equal(0, counts.idle)
        assert.equal(0, counts.active)
        s.listener:close()
      end)
    end)
  end

  it("does not reuse a connection that carried bytes after the response", function()
    run(function()
      local s = raw_server(function(_, conn)
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
      end)
      assert.equal("ok", assert(srv.http.get(s.url .. "/")).body)
      assert.equal("ok", assert(srv.http.get(s.url .. "/")).body)
      assert.equal(2, s.conns)
      s.listener:close()
    end)
  end)

  it("reuses kept-alive connections, counted on the server side", function()
    run(function()
      local s = raw_server(function(_, conn) conn:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") end)
      for _ = 1, 5 do assert.equal("ok", assert(srv.http.get(s.url .. "/")).body) end
      assert.equal(1, s.conns)
      assert.equal(5, s.requests)
      local counts = stats()
      assert.equal(1, counts.idle)
      assert.equal(4, counts.reused)
      -- Connection: close from the server: not reused.
      local c = raw_server(function(_, conn)
        conn:write("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
      end)
      for _ = 1, 3 do assert.equal("ok", assert(srv.http.get(c.url .. "/")).body) end
      assert.equal(3, c.conns)
      s.listener:close()
      c.listener:close()
    end)
  end)

  it("does not pool a connection the request asked to close, and reaches IPv6 literals", function()
    run(function()
      local s = raw_server(function(_, conn) conn:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") end)
      local res = assert(srv.http.get(s.url .. "/", { headers = { Connection = "close" } }))
      assert.equal("ok", res.body)
      assert.equal(0, stats().idle)
      s.listener:close()
      local ok6, l6 = pcall(srv.tcp.listen, { host = "::1", port = 0 }, function(conn)
        assert(conn:readline())
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nipv6")
        conn:close()
      end)
      if ok6 then -- a machine without IPv6 loopback skips this part
        local _, port = l6:address()
        assert.equal("ipv6", assert(srv.http.get("http://[::1]:" .. port .. "/x")).body)
        l6:close()
      end
    end)
  end)

  it("never hands out a pooled connection its server closed while it was idle", function()
    run(function()
      -- Answers one request per connection but keeps the connection "alive" in its head:
      -- the client pools it, and the server's close arrives while it is idle.
      local s = raw_server(function(_, conn)
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return false
      end)
      assert.equal("ok", assert(srv.http.get(s.url .. "/")).body)
      srv.sleep(0.05)
      -- The closed connection is dropped when taken, before anything is sent on it: even a
      -- POST (never retried) goes through on a new connection.
      assert.equal("ok", assert(srv.http.post(s.url .. "/", "x")).body)
      assert.equal(2, s.conns)
      assert.equal(0, stats().retried)
      assert.equal(1, stats().closed_idle)
      s.listener:close()
    end)
  end)

  it("retries an idempotent request once when a reused connection closes unanswered", function()
    run(function()
      -- Answers the first request of a connection; closes at the second without a byte, as
      -- a server does when its keep-alive timeout fires just as the request arrives.
      local s = raw_server(function(_, conn, n)
        if n > 1 then return false end
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
      end)
      assert.equal("ok", assert(srv.http.get(s.url .. "/")).body)
      assert.equal("ok", assert(srv.http.get(s.url .. "/")).body)
      assert.equal(2, s.conns)
      assert.equal(1, stats().retried)
      -- A POST is not retried: the error is returned.
      local res, err = srv.http.post(s.url .. "/", "x")
      assert.is_nil(res)
      assert.equal("closed", err)
      assert.equal(1, stats().retried)
      -- Retried once only: a server that closes every connection at once fails the request.
      s.listener:close()
    end)
  end)

  it("sends Expect: 100-continue for large bodies and the body after the 100", function()
    run(function()
      local seen
      local s = raw_server(function(req, conn)
        seen = req.headers.expect
        conn:write("HTTP/1.1 100 Continue\r\n\r\n")
        local body = conn:read(tonumber(req.headers["content-length"]))
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: ", #body, "\r\n\r\n", body)
      end)
      local payload = string.rep("z", 5000)
      local res = assert(srv.http.post(s.url .. "/", payload, { expect_continue = 1000 }))
      assert.equal("100-continue", seen)
      assert.equal(payload, res.body)
      -- A server that answers at once: the body is not sent, the connection not reused.
      local refuse = raw_server(function(_, conn)
        conn:write("HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        return false
      end)
      res = assert(srv.http.post(refuse.url .. "/", payload, { expect_continue = 1000 }))
      assert.equal(413, res.status)
      assert.equal(0, stats().hosts["http://127.0.0.1:" .. refuse.port .. "|"].idle)
      s.listener:close()
      refuse.listener:close()
    end)
  end)

  it("times out a connect whose TLS handshake never ends (connect_timeout)", function()
    run(function()
      -- Accepts and reads, never answers: the client's ClientHello waits forever.
      local silent = srv.tcp.listen({ port = 0 }, function(conn) conn:read("a") end)
      local _, port = silent:address()
      local res, err, code = srv.http.get("https://127.0.0.1:" .. port .. "/",
        { connect_timeout = 0.2 })
      assert.is_nil(res)
      assert.equal("timeout", err)
      assert.equal("ETIMEDOUT", code)
      assert.equal(0, stats().active)
      silent:close()
    end)
  end)

  it("returns connect errors and refuses bad URLs", function()
    run(function()
      local s = raw_server(function() return false end)
      local port = s.port
      s.listener:close()
      local res, err, code = srv.http.get("http://127.0.0.1:" .. port .. "/")
      assert.is_nil(res)
      assert.equal("ECONNREFUSED", code)
      assert.is_string(err)
      for _, bad in ipairs({ "ftp://x/", "http://", "http://h:0/", "http://h:99999/", "http://[zz]/",
        "http://a b/", "http://h/a b", "nourl", "http://h:12x/" }) do
        local r, e, c = srv.http.get(bad)
        assert.is_nil(r, bad)
        assert.equal("EINVAL", c, bad)
        assert.matches("^bad url", e)
      end
      assert.has_error(function() srv.http.request("http://x/") end)
      assert.has_error(function() srv.http.get("http://x/", { headers = { ["X"] = "a\r\nb" } }) end)
      assert.has_error(function() srv.http.get("http://x/", { headers = { ["X Y"] = "a" } }) end)
    end)
  end)

  it("parses URLs strictly: userinfo, IPv6 literals, default ports, escapes kept", function()
    local client = require "luasrv.http_client"
    local u = assert(client.parse_url("HTTP://user:p%40ss@Example.COM/a%2Fb?q=%20#frag"))
    assert.equal("http", u.scheme)
    assert.equal("example.com", u.host)
    assert.equal(80, u.port)
    assert.equal("/a%2Fb?q=%20", u.target)
    assert.equal("Basic dXNlcjpwQHNz", u.authorization)
    u = assert(client.parse_url("https://[::1]:8443"))
    assert.equal("::1", u.host)
    assert.equal(8443, u.port)
    assert.equal("/", u.target)
    assert.equal("[::1]:8443", u.host_header)
    u = assert(client.parse_url("https://h:443?x"))
    assert.equal("h", u.host_header)
    assert.equal("/?x", u.target)
    assert.equal("http://h/x/z?k", client.resolve(assert(client.parse_url("http://h/x/y")), "z?k"))
    assert.equal("https://o/p", client.resolve(assert(client.parse_url("https://h/x/y")), "//o/p"))
  end)

  it("sends Basic credentials from the URL's userinfo", function()
    run(function()
      local s = raw_server(function(req, conn)
        local a = req.headers.authorization or "none"
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: ", #a, "\r\n\r\n", a)
      end)
      local res = assert(srv.http.get(s.url:gsub("//", "//al%%20ice:secret@") .. "/"))
      assert.equal("Basic YWwgaWNlOnNlY3JldA==", res.body)
      s.listener:close()
    end)
  end)
end)

describe("srv.http client over HTTPS", function()
  local ca
  setup(function() ca = tls_helper.new_ca() end)
  teardown(function() ca.cleanup() end)

  it("verifies the server with a test CA and pools per TLS options", function()
    run(function()
      local cert, key = ca.issue("server")
      local l = srv.http.listen({ port = 0, tls = { cert = cert, key = key } }, function(req)
        return "secure " .. req.scheme
      end)
      local _, port = l:address()
      local url = "https://localhost:" .. port .. "/"
      local res, err, code = srv.http.get(url)
      assert.is_nil(res)
      assert.equal("ETLS", code)
      assert.matches("certificate verify failed", err)
      res = assert(srv.http.get(url, { tls = { ca = ca.pem } }))
      assert.equal("secure https", res.body)
      res = assert(srv.http.get(url, { tls = { ca = ca.pem } }))
      assert.equal("secure https", res.body)
      local counts = stats()
      assert.equal(1, counts.created)
      assert.equal(1, counts.reused)
      res = assert(srv.http.get("https://127.0.0.1:" .. port .. "/", { tls = { ca = ca.pem } }))
      assert.equal("secure https", res.body)
      assert.equal(2, stats().created)
      l:close()
    end)
  end)
end)
