-- The HTTP response: the handler's return conventions and the res methods, seen on the wire
-- (tests/fixtures/http_app.lua, routes /r/*).
local srv = require "luasrv"
local cjson = require "cjson"
local H = require "http_helper"

describe("http response", function()
  local server, port
  local life = H.serve("http_app.lua", function(s) server, port = s, s.port end)
  setup(life.setup)
  teardown(life.teardown)
  after_each(life.check)

  describe("return values", function()
    it("a string is a 200 text/html body", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/string"))
        assert.equal(200, r.status)
        assert.matches("^text/html", r.headers["content-type"])
        assert.equal("<p>hi</p>", r.body)
        assert.equal(tostring(#r.body), r.headers["content-length"])
      end)
    end)

    it("status, body", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/status-body"))
        assert.equal(201, r.status)
        assert.equal("Created", r.reason)
        assert.equal("made", r.body)
      end)
    end)

    it("status, headers, body: the handler's Content-Type replaces the default", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/status-headers-body"))
        assert.equal(202, r.status)
        assert.equal("1", r.headers["x-a"])
        assert.equal(1, r.count["content-type"])
        assert.equal("text/plain; charset=utf-8", r.headers["content-type"])
        assert.equal("hdrs", r.body)
      end)
    end)

    it("a table is a 200 JSON body", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/table"))
        assert.equal(200, r.status)
        assert.matches("^application/json", r.headers["content-type"])
        assert.same({ a = 1, list = { "x", "y" } }, cjson.decode(r.body))
      end)
    end)

    it("status, table is JSON with that status", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/status-table"))
        assert.equal(404, r.status)
        assert.matches("^application/json", r.headers["content-type"])
        assert.same({ err = "nope" }, cjson.decode(r.body))
      end)
    end)
  end)

  describe("res methods", function()
    it("res:status(n):header(k, v):send(body)", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/res-send"))
        assert.equal(201, r.status)
        assert.equal("2", r.headers["x-b"])
        assert.equal("sent", r.body)
        assert.equal("4", r.headers["content-length"])
      end)
    end)

    it("res:status and res:header apply to a returned body", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/status-then-return"))
        assert.equal(418, r.status)
        assert.equal("yes", r.headers["x-teapot"])
        assert.equal("short and stout", r.body)
      end)
    end)

    it("res:json(v, status) and res:json(v)", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/res-json"))
        assert.equal(202, r.status)
        assert.matches("^application/json", r.headers["content-type"])
        assert.same({ x = 1 }, cjson.decode(r.body))
        r = H.exchange(port, H.get("/r/res-json-default"))
        assert.equal(200, r.status)
        assert.same({ y = 2 }, cjson.decode(r.body))
      end)
    end)

    it("res:redirect(url) is a 302 and res:redirect(url, 301) a 301, with Location", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/redirect"))
        assert.equal(302, r.status)
        assert.equal("/elsewhere", r.headers["location"])
        r = H.exchange(port, H.get("/r/redirect-301"))
        assert.equal(301, r.status)
        assert.equal("/moved", r.headers["location"])
      end)
    end)

    it("res:header called twice sends two fields", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/repeat-header"))
        assert.equal(2, r.count["set-cookie"])
        local values = {}
        for _, f in ipairs(r.fields) do
          if f[1]:lower() == "set-cookie" then values[#values + 1] = f[2] end
        end
        assert.same({ "a=1", "b=2" }, values)
      end)
    end)

    it("res:write streams the pieces as one chunked body", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/write"))
        assert.equal(200, r.status)
        assert.equal("chunked", r.framing)
        assert.equal("abc", r.body)
      end)
    end)

    it("res:write with a Content-Length set sends a plain body of that length", function()
      srv.run(function()
        local c = H.connect(port)
        c:send(H.get("/r/write-length") .. H.get("/seq?n=2"))
        local r = c:must_response()
        assert.equal("length", r.framing)
        assert.is_nil(r.headers["transfer-encoding"])
        assert.equal("hello", r.body)
        assert.equal("seq 2", c:must_response().body)
        c:close()
      end)
    end)
  end)

  describe("header injection", function()
    local routes = { "/r/inject-value", "/r/inject-lf", "/r/inject-name", "/r/inject-return",
                     "/r/inject-redirect" }
    for _, route in ipairs(routes) do
      it(route .. " is a 500, never a split response", function()
        srv.run(function()
          local c = H.connect(port, 3)
          c:send(H.get(route))
          local r = c:must_response()
          assert.equal(500, r.status)
          assert.is_nil(r.headers["set-cookie"])
          assert.is_nil(r.headers["x-bad"])
          -- Nothing else follows the 500 (the connection may close or stay open).
          c.conn:settimeout(0.3)
          repeat local ok = c:fill() until not ok
          assert.equal("", c.buf)
          assert.is_nil(c.raw:find("evil", 1, true), "injected bytes reached the wire")
          c:close()
        end)
      end)
    end
  end)

  describe("an error before the head was sent", function()
    it("is a 500 without the status and headers the handler had set", function()
      srv.run(function()
        local r = H.exchange(port, H.get("/r/header-then-error"))
        assert.equal(500, r.status)
        assert.is_nil(r.headers["set-cookie"])
      end)
    end)
  end)

  describe("an error after the head was sent", function()
    it("aborts the connection: the chunked body never ends properly", function()
      srv.run(function()
        local c = H.connect(port, 3)
        c:send(H.get("/r/abort"))
        local head = c:head()
        assert.is_table(head, "no head")
        assert.equal(200, head.status)
        assert.equal("chunked", (head.headers["transfer-encoding"] or ""):lower())
        local got, ended, err = {}, false, nil
        for _ = 1, 100 do
          local chunk, cerr = c:chunk()
          if chunk == nil then err = cerr break end
          if chunk == "" then ended = true break end
          got[#got + 1] = chunk
        end
        assert.is_false(ended, "the failed response was terminated as if complete")
        assert.equal("partial", table.concat(got))
        assert.is_true(c.eof, "the connection was not closed: " .. tostring(err))
        c:close()
        -- The server goes on.
        assert.equal("hello", H.exchange(port, H.get("/hello")).body)
      end)
    end)
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)
