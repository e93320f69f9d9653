-- The request object and what the core caches for it: req.headers is a view of the parsed
-- fields (no table of all headers per request), method names are interned once, and the
-- response object is made only for handlers that take it. A kept object must never see a
-- later request's data, also when requests arrive pipelined in one write.
local srv = require "luasrv"
local cjson = require "cjson"
local H = require "http_helper"

describe("http request objects", function()
  local port
  local life = H.serve("objects_app.lua", function(s) port = s.port end)
  setup(life.setup)
  teardown(life.teardown)
  after_each(life.check)

  local function get(c, path, extra)
    c:send(H.get(path, extra))
    local r = c:must_response()
    assert.equal(200, r.status, r.body)
    return cjson.decode(r.body)
  end

  it("never shows a kept request the next request's data, pipelined in one write", function()
    srv.run(function()
      local c = H.connect(port)
      c:send(H.get("/keep", "X-N: 1\r\n") .. H.get("/keep", "X-N: 2\r\n") .. H.get("/keep", "X-N: 3\r\n"))
      local answers = {}
      for i = 1, 3 do
        local r = c:must_response()
        assert.equal(200, r.status, r.body)
        answers[i] = cjson.decode(r.body)
      end
      for i = 1, 3 do
        assert.equal(tostring(i), answers[i].n)
        assert.equal("GET", answers[i].method)
        assert.equal("/keep", answers[i].path)
      end
      -- Requests 2 and 3 looked at the one before, already ended: nothing of theirs shows.
      for i = 2, 3 do
        local prev = answers[i].prev
        assert.is_nil(prev.method)
        assert.is_nil(prev.n)
        assert.is_nil(prev.via_call)
        assert.equal("set by " .. (i - 1), prev.assigned) -- what the handler assigned stays
        assert.equal("luasrv.Request (ended)", prev.text)
      end
      local kept = get(c, "/kept", "X-N: 4\r\n")
      assert.equal(3, #kept)
      for i = 1, 3 do
        assert.is_nil(kept[i].method)
        assert.is_nil(kept[i].n)
        assert.equal("set by " .. i, kept[i].assigned)
        assert.equal(1, kept[i].names) -- pairs sees only the assigned field now
        assert.equal("luasrv.Request (ended)", kept[i].text)
      end
      c:close()
    end)
  end)

  it("keeps each request's own data across keep-alive requests sent one by one", function()
    srv.run(function()
      local c = H.connect(port)
      for i = 1, 5 do
        local a = get(c, "/keep", ("X-N: %d\r\n"):format(i * 10))
        assert.equal(tostring(i * 10), a.n)
        if i > 1 then assert.is_nil(a.prev.n) end
      end
      get(c, "/kept")
      c:close()
    end)
  end)

  it("looks fields up in any case, joins repeats, iterates, assigns and encodes as JSON", function()
    srv.run(function()
      local c = H.connect(port)
      local v = get(c, "/view", "X-One: 1\r\nX-Multi: a\r\nx-multi: b\r\nX-Gone: g\r\n")
      assert.is_true(v.same_object)
      assert.equal("1", v.upper)
      assert.equal("1", v.lower)
      assert.equal("a, b", v.joined)
      assert.is_nil(v.missing)
      assert.is_nil(v.number_key)
      assert.same({ host = "test.local", ["x-one"] = "1", ["x-multi"] = "a, b", ["x-gone"] = "g" },
        v.seen)
      assert.same({ host = "test.local", ["x-one"] = "1", ["x-multi"] = "a, b",
                    ["x-added"] = "added" }, v.after)
      assert.equal("added", v.added)
      assert.is_nil(v.gone)
      assert.same(v.after, v.json)
      assert.equal("luasrv.Headers", v.text)
      c:close()
    end)
  end)

  it("sends req.headers returned as the body as a JSON object", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/as-body", "X-Echo: yes\r\n"))
      assert.equal(200, r.status, r.body)
      assert.equal("application/json", r.headers["content-type"])
      assert.same({ host = "test.local", ["x-echo"] = "yes" }, cjson.decode(r.body))
    end)
  end)

  it("raises a Lua error when their functions are called on other values", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/misuse"))
      assert.equal(200, r.status, r.body)
      local t = cjson.decode(r.body)
      assert.matches("luasrv.Request expected, got FILE*", t.index, 1, true)
      assert.matches("luasrv.Request expected, got string", t.newindex, 1, true)
      assert.matches("luasrv.Request expected", t.header, 1, true)
      assert.matches("expected, got FILE*", t.headers_index, 1, true)
      assert.matches("expected, got luasrv.Request", t.headers_newindex, 1, true)
      assert.matches("expected, got luasrv.Request", t.res, 1, true)
      assert.equal("GET test.local", t.still)
    end)
  end)

  it("answers 500 when a handler assigns a table to a header", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/bad-assign"))
      assert.equal(500, r.status)
    end)
  end)

  it("gives the response object to a handler declared with (req, ...)", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/arity"))
      assert.equal(200, r.status, r.body)
      assert.equal("yes", r.headers["x-res"])
      assert.same({ count = 1, method = "GET" }, cjson.decode(r.body))
    end)
  end)
end)
