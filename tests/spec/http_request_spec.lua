-- The HTTP request object, seen through raw requests to the real binary
-- (tests/fixtures/http_app.lua, routes /inspect, /pieces, /reader-echo, /json).
local srv = require "luasrv"
local cjson = require "cjson"
local H = require "http_helper"

describe("http request", function()
  local server, port
  local life = H.serve("http_app.lua", function(s) server, port = s, s.port end)
  setup(life.setup)
  teardown(life.teardown)
  after_each(life.check)

  -- Sends bytes, expects a 200 JSON answer from /inspect and decodes it.
  local function inspect(bytes)
    local r = H.exchange(port, bytes)
    assert.equal(200, r.status, r.body)
    assert.matches("^application/json", r.headers["content-type"] or "")
    return cjson.decode(r.body)
  end

  it("has the method, the decoded path and the raw path", function()
    srv.run(function()
      local info = inspect("DELETE /inspect HTTP/1.1\r\nHost: t\r\n\r\n")
      assert.equal("DELETE", info.method)
      assert.equal("/inspect", info.path)
      -- The fixture routes on req.path, so a percent-encoded path still reaches /inspect.
      info = inspect(H.get("/%69nspect?x=1"))
      assert.equal("GET", info.method)
      assert.equal("/inspect", info.path)
      assert.equal("/%69nspect", info.raw_path)
    end)
  end)

  it("parses the query: decoding, '+' as space, repeated keys as a list", function()
    srv.run(function()
      local info = inspect(H.get("/inspect?a=1&b=2&a=3&c=hello+world&d=%26%3D&e=&a=x%20y"))
      assert.same({ "1", "3", "x y" }, info.query.a)
      assert.equal("2", info.query.b)
      assert.equal("hello world", info.query.c)
      assert.equal("&=", info.query.d)
      assert.equal("", info.query.e)
    end)
  end)

  it("has an empty query table without a query string", function()
    srv.run(function()
      local info = inspect(H.get("/inspect"))
      assert.same({}, info.query)
    end)
  end)

  it("looks headers up case-insensitively, in the table and through req:header", function()
    srv.run(function()
      local info = inspect(H.get("/inspect", "x-TeSt: the value\r\n"))
      assert.equal("the value", info.lookup.lower)
      assert.equal("the value", info.lookup.upper)
      assert.equal("the value", info.lookup.mixed)
      assert.equal("the value", info.lookup.call_mixed)
      assert.equal("the value", info.lookup.call_upper)
      assert.is_nil(info.lookup.missing)
      assert.is_nil(info.lookup.missing_field)
      assert.equal("test.local", info.headers.host)
    end)
  end)

  it("joins repeated headers with ', ' and lists them through header_values", function()
    srv.run(function()
      local info = inspect(H.get("/inspect", "X-Multi: a\r\nX-Other: o\r\nx-multi: b\r\nX-MULTI: c, d\r\n"))
      assert.equal("a, b, c, d", info.lookup.multi)
      assert.equal("a, b, c, d", info.lookup.call_multi)
      assert.same({ "a", "b", "c, d" }, info.values)
      assert.equal(3, info.values_count)
      assert.equal(0, info.values_missing_count)
    end)
  end)

  it("trims the whitespace around a header value", function()
    srv.run(function()
      local info = inspect(H.get("/inspect", "X-Test: \t  padded value \t \r\n"))
      assert.equal("padded value", info.lookup.lower)
    end)
  end)

  it("has the peer address", function()
    srv.run(function()
      local info = inspect(H.get("/inspect"))
      assert.equal("127.0.0.1", info.peer)
    end)
  end)

  it("parses cookies, also from several Cookie fields", function()
    srv.run(function()
      local info = inspect(H.get("/inspect", "Cookie: a=1; b=two\r\nCookie: c=3\r\n"))
      assert.same({ a = "1", b = "two", c = "3" }, info.cookies)
      info = inspect(H.get("/inspect"))
      assert.same({}, info.cookies)
    end)
  end)

  it("reads the body with body()", function()
    srv.run(function()
      local info = inspect(H.req("PUT", "/inspect", "Content-Type: text/plain\r\n", "line1\r\nline2"))
      assert.equal("PUT", info.method)
      assert.equal("line1\r\nline2", info.body)
      info = inspect(H.get("/inspect"))
      assert.equal("", info.body)
    end)
  end)

  it("streams the body with body_reader() as the pieces arrive", function()
    srv.run(function()
      local c = H.connect(port, 3)
      c:send("POST /pieces HTTP/1.1\r\nHost: t\r\nContent-Length: 15\r\n\r\n0123456789")
      local head, err = c:head()
      assert.is_table(head, "nothing came back while the body was incomplete: body_reader() "
        .. "did not hand over the first piece (" .. tostring(err) .. ")")
      assert.equal(200, head.status)
      assert.equal("chunked", (head.headers["transfer-encoding"] or ""):lower())
      -- The first piece is answered before the rest of the body is even sent.
      local text = ""
      while not text:find("\n", 1, true) do
        local chunk, cerr = c:chunk()
        assert.is_string(chunk, "no answer to the first piece: " .. tostring(cerr))
        assert.are_not.equal("", chunk, "the response ended early")
        text = text .. chunk
      end
      assert.matches("^got:%d+\n", text)
      c:send("abcde")
      local rest = {}
      repeat
        local chunk, cerr = c:chunk()
        assert.is_string(chunk, tostring(cerr))
        rest[#rest + 1] = chunk
      until chunk == ""
      local all = text .. table.concat(rest)
      assert.matches("total:15\n$", all)
      local sum = 0
      for n in all:gmatch("got:(%d+)\n") do sum = sum + tonumber(n) end
      assert.equal(15, sum)
      c:close()
    end)
  end)

  it("gives the whole body through body_reader(), also chunked", function()
    srv.run(function()
      local r = H.exchange(port,
        "POST /reader-echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n")
      assert.equal(200, r.status)
      assert.equal("abcdefg", r.body)
      r = H.exchange(port, H.req("POST", "/reader-echo", nil, ""))
      assert.equal(200, r.status)
      assert.equal("", r.body)
    end)
  end)

  it("decodes a JSON body with json()", function()
    srv.run(function()
      local r = H.exchange(port, H.req("POST", "/json", "Content-Type: application/json\r\n",
        '{"a":1,"b":[1,2],"c":{"d":"e"}}'))
      assert.equal(200, r.status)
      local v = cjson.decode(r.body)
      assert.is_true(v.parsed)
      assert.same({ a = 1, b = { 1, 2 }, c = { d = "e" } }, v.value)
    end)
  end)

  it("answers nil and a message from json() for a bad JSON body", function()
    srv.run(function()
      local r = H.exchange(port, H.req("POST", "/json", "Content-Type: application/json\r\n",
        '{"a":1,'))
      assert.equal(400, r.status, "the handler did not get nil, err: " .. r.body)
      local v = cjson.decode(r.body)
      assert.is_false(v.parsed)
      assert.equal("string", v.err_type)
      assert.matches("%S", v.err)
    end)
  end)

  it("bounds body() by max_body: 413 for a larger body", function()
    srv.run(function()
      local c = H.connect(port, 5)
      local piece = ("b"):rep(256 * 1024)
      c:send("POST /inspect HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
      for _ = 1, 5 do c:send(("%x\r\n%s\r\n"):format(#piece, piece)) end
      local r = c:must_response()
      assert.equal(413, r.status)
      c:close()
    end)
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)
