-- srv.json: OpenResty lua-cjson's array semantics (empty_array, array_mt, decoded arrays that
-- stay arrays), integers kept as integers, strict decoding (RFC 8259: no NaN/Infinity, UTF-8
-- only), errors with positions, a depth limit, and its use by the HTTP server.
local srv = require "luasrv"
local t = require "luasrv.test"
local helper = require "helper"
local S = require "static_helper"

local json = srv.json

-- Calls json.encode from this file (not through pcall directly, so the error has a location)
-- and returns the error with the line it should name.
local function encode_error(value)
  local line = debug.getinfo(1, "l").currentline + 1
  local ok, err = pcall(function() local s = json.encode(value); return s end)
  assert.is_false(ok, "encode should have raised")
  return err, ("json_spec.lua:%d: "):format(line)
end

local function assert_encode_error(value, needle)
  local err, where = encode_error(value)
  assert.truthy(err:find(where, 1, true), "no file:line in: " .. err)
  assert.truthy(err:find(needle, 1, true), ("%q not in: %s"):format(needle, err))
end

local function assert_refused(text, needle)
  local v, err = json.decode(text)
  assert.is_nil(v)
  assert.is_string(err)
  assert.truthy(err:find(needle, 1, true), ("%q not in: %s"):format(needle, err))
  return err
end

describe("srv.json", function()
  it("is require('luasrv').json, with encode, decode and the sentinels", function()
    assert.equal(require("luasrv.core").json, json)
    assert.is_function(json.encode)
    assert.is_function(json.decode)
    assert.equal("userdata", type(json.null))
    assert.equal("userdata", type(json.empty_array))
    assert.not_equal(json.null, json.empty_array)
    assert.is_table(json.array_mt)
  end)

  it("has the same null as lua-cjson (a NULL light userdata)", function()
    assert.equal(require("cjson").null, json.null)
  end)

  describe("round trips", function()
    it("keeps scalars", function()
      for _, v in ipairs({ true, false, 0, 1, -1, 42, 1.5, -0.25, 1e300, 5e-324, "", "text",
                           math.maxinteger, math.mininteger }) do
        local back = json.decode(json.encode(v))
        assert.equal(v, back)
        assert.equal(math.type(v), math.type(back))
      end
    end)

    it("keeps nested objects and arrays", function()
      local text = '{"a":[1,[2,[3,{"b":[]}]],{}],"c":{"d":{"e":null}}}'
      local v = assert(json.decode(text))
      assert.equal(1, v.a[1])
      assert.equal(3, v.a[2][2][1])
      assert.equal(json.null, v.c.d.e)
      -- an object comes back with its keys in any order: decode again and compare
      assert.same(v, json.decode(json.encode(v)))
      assert.equal('{"b":[]}', json.encode(v.a[2][2][2]))
      assert.equal("{}", json.encode(v.a[3]))
    end)

    it("keeps floats exact with the fewest digits", function()
      for _, v in ipairs({ 0.1, 1 / 3, 2 ^ 53 + 0.0, 123.456, 1e-7, -2.5e-300, 1.7976931348623157e308 }) do
        assert.equal(v, json.decode(json.encode(v)))
      end
      assert.equal("0.1", json.encode(0.1))
      assert.equal("1.5", json.encode(1.5))
    end)
  end)

  describe("arrays", function()
    it("encodes empty_array as []", function()
      assert.equal("[]", json.encode(json.empty_array))
      assert.equal('{"list":[]}', json.encode({ list = json.empty_array }))
    end)

    it("encodes a table with array_mt as an array, also when empty", function()
      assert.equal("[]", json.encode(setmetatable({}, json.array_mt)))
      assert.equal("[1,2]", json.encode(setmetatable({ 1, 2 }, json.array_mt)))
      assert.equal('{"todos":[]}', json.encode({ todos = setmetatable({}, json.array_mt) }))
    end)

    it("encodes holes of an array_mt table up to #t as null", function()
      assert.equal("[1,null,3]", json.encode(setmetatable({ 1, nil, 3 }, json.array_mt)))
    end)

    it("encodes an empty plain table as an object, as lua-cjson does", function()
      assert.equal("{}", json.encode({}))
    end)

    it("decodes arrays with array_mt, so [] encodes back as []", function()
      local v = json.decode("[]")
      assert.equal(json.array_mt, getmetatable(v))
      assert.equal("[]", json.encode(v))
      assert.equal("[[],[[]]]", json.encode(json.decode("[[],[[]]]")))
      assert.equal('{"todos":[]}', json.encode(json.decode('{"todos":[]}')))
      assert.is_nil(getmetatable(json.decode("{}")))
      assert.equal("{}", json.encode(json.decode("{}")))
    end)

    it("keeps null items, so the length stays", function()
      local v = json.decode("[1,null,3]")
      assert.equal(3, #v)
      assert.equal(json.null, v[2])
      assert.equal("[1,null,3]", json.encode(v))
    end)

    it("encodes plain tables with keys 1..n as arrays, whatever order they were set in", function()
      local v = {}
      v[3], v[2], v[1] = "c", "b", "a"
      assert.equal('["a","b","c"]', json.encode(v))
      assert.equal("[1,2,3]", json.encode({ 1, 2, 3 }))
    end)
  end)

  describe("null", function()
    it("decodes JSON null to json.null and encodes it back", function()
      assert.equal(json.null, json.decode("null"))
      assert.equal(json.null, json.decode('{"a":null}').a)
      assert.equal("null", json.encode(json.null))
      assert.equal('{"a":null}', json.encode({ a = json.null }))
      assert.equal("null", json.encode(nil))
    end)
  end)

  describe("numbers", function()
    it("decodes integers as Lua integers and the rest as floats", function()
      assert.equal("integer", math.type(json.decode("1")))
      assert.equal("integer", math.type(json.decode("-17")))
      assert.equal(math.maxinteger, json.decode("9223372036854775807"))
      assert.equal(math.mininteger, json.decode("-9223372036854775808"))
      assert.equal("float", math.type(json.decode("1.0")))
      assert.equal("float", math.type(json.decode("1e2")))
      assert.equal(100.0, json.decode("1e2"))
      assert.equal(-0.5, json.decode("-5E-1"))
    end)

    it("refuses integers outside 64 bits (rather than rounding them)", function()
      assert_refused("9223372036854775808", "too big integer")
      assert_refused("[-9223372036854775809]", "too big negative integer")
    end)

    it("encodes integers exactly and integral floats without a fraction", function()
      assert.equal("9223372036854775807", json.encode(math.maxinteger))
      assert.equal("-9223372036854775808", json.encode(math.mininteger))
      assert.equal("3", json.encode(3.0))
      assert.equal("1e+300", json.encode(1e300))
    end)
  end)

  describe("strings", function()
    it("escapes quotes, backslashes and control characters, and leaves / alone", function()
      assert.equal([["a\"b\\c\n\r\t\b\f\u0001\u001f/d"]],
        json.encode('a"b\\c\n\r\t\b\f\1\31/d'))
      assert.equal('a"b\\c\n\1/d', json.decode([["a\"b\\c\n\u0001\/d"]]))
    end)

    it("writes UTF-8 as it is and reads \\u escapes, surrogate pairs included", function()
      assert.equal('"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"', json.encode("h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"))
      assert.equal("\xc3\xa9", json.decode('"\\u00e9"'))
      assert.equal("\xe2\x82\xac", json.decode('"\\u20AC"'))
      assert.equal("\xf0\x9f\x98\x80", json.decode('"\\ud83d\\ude00"'))
      assert.equal("\xf0\x9f\x98\x80", json.decode('"\xf0\x9f\x98\x80"'))
    end)

    it("keeps NUL bytes in strings", function()
      assert.equal("a\0b", json.decode('"a\\u0000b"'))
      assert.equal('"a\\u0000b"', json.encode("a\0b"))
    end)

    it("refuses lone surrogate escapes", function()
      assert_refused('"\\ud800"', "invalid Unicode")
      assert_refused('"\\udc00x"', "invalid Unicode")
    end)
  end)

  describe("decoding refuses", function()
    it("malformed text, with nil and a message giving the position", function()
      assert.equal("']' expected near end of file at line 1, column 3 (byte 3)",
        assert_refused("[1,", "expected"))
      assert_refused('{"a":1} x', "byte 9")
      assert_refused("", "byte 0")
      assert_refused('{"a" 1}', "byte 6")
      assert_refused("[1,\n 2,,]", "line 2")
      assert_refused("[01]", "invalid token")
      assert_refused("{'a':1}", "string or '}' expected")
      assert_refused("[1,]", "byte 4")
    end)

    it("NaN and Infinity, which JSON does not have", function()
      assert_refused("NaN", "invalid token near 'NaN'")
      assert_refused("[1, Infinity]", "invalid token near 'Infinity'")
      assert_refused('{"x":-Infinity}', "invalid token")
      assert_refused("[nan]", "invalid token")
      assert_refused("1e400", "real number overflow")
    end)

    it("invalid UTF-8, overlong forms and encoded surrogates", function()
      assert_refused('"\xff"', "invalid UTF-8")
      assert_refused('["ok", "\xc3"]', "invalid UTF-8")
      assert_refused('"\xc0\xaf"', "invalid UTF-8")
      assert_refused('"\xed\xa0\x80"', "invalid UTF-8")
      assert_refused('"\xf4\x90\x80\x80"', "invalid UTF-8")
      assert_refused('{"\xfe":1}', "invalid UTF-8")
    end)

    it("nesting deeper than 1000 levels, saying where", function()
      local ok = ("["):rep(1000) .. ("]"):rep(1000)
      assert.equal(ok, json.encode(json.decode(ok)))
      local deep = ("["):rep(1001) .. ("]"):rep(1001)
      assert.equal("nesting deeper than 1000 levels at byte 1001", assert_refused(deep, "nesting"))
      local objects = ('{"a":'):rep(1001) .. "1" .. ("}"):rep(1001)
      assert_refused(objects, "nesting deeper than 1000 levels at byte 5001")
      assert_refused(("["):rep(100000), "nesting deeper than 1000 levels at byte 1001")
    end)

    it("and a non-string argument raises", function()
      assert.has_error(function() json.decode({}) end)
    end)
  end)

  describe("encoding raises, naming the caller's file:line", function()
    it("for a function, a userdata and a thread", function()
      assert_encode_error(print, "json: cannot encode a function")
      assert_encode_error({ f = io.stdout }, "json: cannot encode a userdata (at .f)")
      assert_encode_error({ coroutine.create(print) }, "cannot encode a thread (at [1])")
    end)

    it("for NaN and infinities", function()
      assert_encode_error(0 / 0, "cannot encode NaN")
      assert_encode_error({ x = { 1 / 0 } }, "cannot encode inf (JSON has no infinities) (at .x[1])")
      assert_encode_error(-math.huge, "cannot encode -inf")
    end)

    it("for mixed and sparse tables", function()
      assert_encode_error({ 1, 2, name = "x" }, 'table mixes array items and the string key "name"')
      -- which key lua_next meets first depends on the table's hash layout
      assert_encode_error({ name = "x", [10] = 2 }, "table mixes ")
      assert_encode_error({ a = "x", b = 1, [true] = 2 }, "table has the key true (JSON keys are strings or array")
      assert_encode_error({ [1] = 1, [3] = 3 }, "sparse array: keys up to 3 but only 2 items")
      assert_encode_error({ [0] = "zero" }, "table has the key 0")
      assert_encode_error({ [1.5] = 1 }, "table has the key 1.5")
      assert_encode_error({ [true] = 1 }, "table has the key true")
      assert_encode_error(setmetatable({ 1, n = 1 }, json.array_mt), 'the string key "n"')
    end)

    it("for a string that is not UTF-8", function()
      assert_encode_error({ list = { "ok", "caf\xe9" } },
        "string is not valid UTF-8 (byte 4 is 0xe9) (at .list[2])")
    end)

    it("for nesting deeper than 1000 levels and for cycles", function()
      local v = {}
      for _ = 1, 999 do v = { v } end
      assert.equal(("["):rep(999) .. "{}" .. ("]"):rep(999), json.encode(v))
      assert_encode_error({ v }, "nesting deeper than 1000 levels")
      local cycle = {}
      cycle.self = cycle
      assert_encode_error(cycle, "nesting deeper than 1000 levels (a table that contains itself?) (at .self.self")
    end)

    it("and the encoder still works after an error", function()
      encode_error({ 1, 2, f = print })
      assert.equal('{"a":[1,2]}', json.encode({ a = { 1, 2 } }))
    end)
  end)

  it("encodes large documents whole", function()
    local list = {}
    for i = 1, 20000 do list[i] = { id = i, name = ("item %d"):format(i), tags = json.empty_array } end
    local text = json.encode(list)
    assert.equal(20000, #json.decode(text))
    assert.equal(("x"):rep(300000), json.decode(json.encode(("x"):rep(300000))))
  end)
end)

describe("srv.json in HTTP", function()
  local function app_with(method, path, fn)
    local app = srv.http.app()
    app[method](app, path, fn)
    return app
  end

  it("sends a table returned by a handler through srv.json", function()
    local app = app_with("get", "/", function()
      return { items = setmetatable({}, json.array_mt), none = json.empty_array }
    end)
    local r = t.request(app, { path = "/" })
    assert.equal(200, r.status)
    assert.equal("application/json", r.headers["content-type"])
    local v = json.decode(r.body)
    assert.equal("[]", json.encode(v.items))
    assert.equal("[]", json.encode(v.none))
  end)

  it("res:json sends [] for empty_array and raises at the handler's line for a bad value", function()
    local line
    local app = app_with("get", "/", function(_, res)
      line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() res:json({ f = print }) end)
      assert(not ok)
      res:json({ err = err, list = json.empty_array })
    end)
    local r = t.request(app, { path = "/" })
    local v = json.decode(r.body)
    assert.equal("[]", json.encode(v.list))
    assert.equal(("json_spec.lua:%d: json: cannot encode a function (at .f)"):format(line),
      v.err:match("[^/]*$"))
  end)

  it("answers 500 for a returned table JSON cannot carry", function()
    local app = app_with("get", "/", function() return { 1, 2, x = 3 } end)
    assert.equal(500, t.request(app, { path = "/" }).status)
  end)

  describe("req:json()", function()
    local app = app_with("post", "/", function(req)
      local v, err = req:json()
      if v == nil then return 400, err end
      return { echo = v }
    end)

    it("decodes a body, with [] staying an array", function()
      local r = t.request(app, { method = "POST", path = "/", body = '{"a":[],"n":1}' })
      assert.equal(200, r.status)
      assert.truthy(r.body:find('"a":[]', 1, true), r.body)
    end)

    it("refuses NaN, Infinity and invalid UTF-8 with nil and a message", function()
      for body, needle in pairs({ ['{"x":NaN}'] = "invalid token near 'NaN'",
                                  ["[Infinity]"] = "invalid token near 'Infinity'",
                                  ['{"x":"\xff"}'] = "invalid UTF-8",
                                  ["[1,"] = "byte 3", [""] = "byte 0" }) do
        local r = t.request(app, { method = "POST", path = "/", body = body })
        assert.equal(400, r.status, body)
        assert.truthy(r.body:find(needle, 1, true), ("%q not in %q"):format(needle, r.body))
      end
    end)
  end)
end)

describe("examples/json_api.lua", function()
  local server, url

  setup(function()
    server = helper.start(helper.path("examples/json_api.lua"), { args = { "0" } })
    url = ("http://127.0.0.1:%d"):format(server.port)
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  local function curl(args)
    return S.capture("curl -s -w ' %{http_code}' " .. args)
  end

  it("answers {\"todos\":[]} once the last todo is deleted (curl)", function()
    local out = curl(("-d '{\"title\":\"write docs\"}' %s/todos"):format(url))
    local body, status = out:match("^(.*) (%d+)$")
    assert.equal("201", status)
    assert.truthy(body:find('"title":"write docs"', 1, true), body)
    assert.equal(" 204", curl(("-X DELETE %s/todos/1"):format(url)))
    local list = curl(("%s/todos"):format(url))
    assert.truthy(list:find('"todos":[]', 1, true), list)
    assert.truthy(list:find('"count":0', 1, true), list)
    assert.truthy(list:find(" 200$"), list)
  end)

  it("answers 400 for a body with NaN (curl)", function()
    local out = curl(("-d '{\"title\":\"x\",\"n\":NaN}' %s/todos"):format(url))
    assert.truthy(out:find(" 400$"), out)
    assert.truthy(out:find("invalid token near 'NaN'", 1, true), out)
  end)
end)
