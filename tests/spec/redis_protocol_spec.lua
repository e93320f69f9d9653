-- The RESP parser of luasrv.redis against a scripted raw server: well-formed replies cut into
-- pieces, and many malformed or oversized ones, each refused with a clear error that closes
-- the connection (the server sees it close). No redis-server is needed here.
local srv = require "luasrv"
local redis = require "luasrv.redis"

-- Runs fn(port, seen) against a server that answers the i-th command it reads with
-- replies[i] (a string, or a function(conn) that writes what it likes). seen.closed turns
-- true when the client closes the connection, seen.commands collects what arrived.
local function with_script(replies, fn)
  local seen = { closed = false, commands = {} }
  srv.run(function()
    local l = srv.tcp.listen({ port = 0 }, function(conn)
      conn:settimeout(10)
      local i = 0
      while true do
        local data = conn:read()
        if not data then
          seen.closed = true
          return
        end
        seen.commands[#seen.commands + 1] = data
        i = i + 1
        local reply = replies[i]
        if type(reply) == "function" then
          reply(conn)
        elseif reply then
          conn:write(reply)
        end
      end
    end)
    local ok, err = pcall(fn, select(2, l:address()), seen)
    l:close()
    if not ok then error(err, 0) end
  end)
  return seen
end

local function wait_closed(seen)
  local deadline = srv.monotime() + 5
  while not seen.closed do
    assert(srv.monotime() < deadline, "the server did not see the connection close")
    srv.sleep(0.01)
  end
end

-- The client refuses `reply` with an error matching `pattern` and closes the connection.
local function refuses(reply, pattern, opts)
  local seen = with_script({ reply }, function(port, seen)
    local o = { port = port, timeout = 5 }
    for k, v in pairs(opts or {}) do o[k] = v end
    local r = assert(redis.connect(o))
    local v, err, code = r:get("x")
    assert.is_nil(v)
    assert.is_truthy(tostring(err):find(pattern), ("error %q does not match %q"):format(tostring(err), pattern))
    if code ~= "EOF" then assert.equal("EPROTO", code) end
    -- The connection is unusable now, for this client and for the pool.
    assert.same({ nil, "closed", "ECLOSED" }, { r:get("x") })
    wait_closed(seen)
    r:release()
  end)
  assert.equal(1, #seen.commands)
end

describe("redis replies from a scripted server", function()
  it("parses replies that arrive one byte at a time", function()
    local reply = "*5\r\n$5\r\nhello\r\n:-42\r\n$-1\r\n*2\r\n+OK\r\n$0\r\n\r\n-ERR inner\r\n"
    with_script({ function(conn)
      for i = 1, #reply do
        conn:write(reply:sub(i, i))
        srv.sleep(0.001)
      end
    end, "+PONG\r\n" }, function(port)
      local r = assert(redis.connect({ port = port, timeout = 5 }))
      local v = assert(r:call("X"))
      assert.equal(5, #v)
      assert.equal("hello", v[1])
      assert.equal(-42, v[2])
      assert.equal(math.type(v[2]), "integer")
      assert.equal(redis.null, v[3])
      assert.same({ "OK", "" }, v[4])
      assert.equal("ERR inner", redis.is_error(v[5]))
      assert.equal("PONG", r:ping())
      r:close()
    end)
  end)

  it("reads a bulk string larger than the read-ahead, split anywhere", function()
    local big = string.rep("0123456789abcdef", 40000) -- 640,000 bytes
    with_script({ function(conn)
      local wire = "$" .. #big .. "\r\n" .. big .. "\r\n"
      conn:write(wire:sub(1, 3))
      srv.sleep(0.01)
      conn:write(wire:sub(4, 100000))
      srv.sleep(0.01)
      conn:write(wire:sub(100001))
    end }, function(port)
      local r = assert(redis.connect({ port = port, timeout = 5 }))
      local v = assert(r:get("big"))
      assert.equal(#big, #v)
      assert.is_true(v == big)
      r:close()
    end)
  end)

  it("parses every RESP3 type", function()
    local reply = table.concat({
      "%2\r\n+a\r\n:1\r\n+b\r\n~2\r\n+x\r\n+y\r\n", "_\r\n", "#t\r\n", "#f\r\n", ",3.25\r\n",
      ",inf\r\n", ",-inf\r\n", "(12345678901234567890\r\n", "=8\r\ntxt:some\r\n",
      "!9\r\nERR blob!\r\n", "|1\r\n+ttl\r\n:5\r\n+after-attribute\r\n",
      ">3\r\n+message\r\n+ch\r\n+pushed\r\n:7\r\n",
    })
    with_script({ reply }, function(port)
      local r = assert(redis.connect({ port = port, timeout = 5 }))
      local res = assert(r:pipeline(function(p)
        for _ = 1, 11 do p:call("X") end
      end))
      assert.equal(1, res[1].a)
      assert.same({ x = true, y = true }, res[1].b)
      assert.equal(redis.null, res[2])
      assert.is_true(res[3])
      assert.is_false(res[4])
      assert.equal(3.25, res[5])
      assert.equal(math.huge, res[6])
      assert.equal(-math.huge, res[7])
      assert.equal("12345678901234567890", res[8])
      assert.equal("some", res[9])
      assert.equal("ERR blob!", redis.is_error(res[10]))
      assert.equal("after-attribute", res[11])
      -- The push before the integer is set aside: the 12th reply is the integer.
      assert.equal(7, r:call("X2"))
      r:close()
    end)
  end)

  it("keeps the connection after an error reply", function()
    with_script({ "-ERR first\r\n", "-WRONGTYPE second one\r\n", "$2\r\nok\r\n" }, function(port)
      local r = assert(redis.connect({ port = port, timeout = 5 }))
      assert.same({ nil, "ERR first", "ERR" }, { r:get("a") })
      assert.same({ nil, "WRONGTYPE second one", "WRONGTYPE" }, { r:get("b") })
      assert.equal("ok", r:get("c"))
      r:close()
    end)
  end)

  local cases = {
    { "unknown type", "?what\r\n", "unknown reply type '%?'" },
    { "empty line", "\r\n", "empty line" },
    { "letters as a bulk length", "$abc\r\n", "bad bulk string length 'abc'" },
    { "empty bulk length", "$\r\n", "bad bulk string length" },
    { "bulk length -2", "$-2\r\n", "bad bulk string length '%-2'" },
    { "bulk length beyond 64 bits", "$99999999999999999999\r\n", "bad bulk string length" },
    { "bulk length over the default limit", "$600000000\r\n", "over the limit of 536870912" },
    { "bulk data without its CRLF", "$5\r\nhello!!\r\n", "not followed by CRLF" },
    { "bulk data with LF only", "$5\r\nhello\n\n", "not followed by CRLF" },
    { "letters in an integer", ":12a\r\n", "bad integer '12a'" },
    { "empty integer", ":\r\n", "bad integer" },
    { "integer beyond 64 bits", ":99999999999999999999\r\n", "bad integer" },
    { "float as an integer", ":1.5\r\n", "bad integer" },
    { "letters as an array length", "*x\r\n", "bad array length 'x'" },
    { "array over the element limit", "*100000000\r\n", "over the limit of 16777216" },
    { "arrays nested too deep", string.rep("*1\r\n", 40) .. ":1\r\n", "nested deeper than 32" },
    { "a status line without an end", "+" .. string.rep("x", 70000), "line too long" },
    { "bad boolean", "#x\r\n", "bad boolean 'x'" },
    { "bad double", ",abc\r\n", "bad double 'abc'" },
    { "bad null", "_x\r\n", "bad null" },
    { "bad big number", "(12x\r\n", "bad big number" },
    { "verbatim without a format", "=3\r\nabc\r\n", "bad verbatim string" },
    { "verbatim without the colon", "=6\r\nabcdef\r\n", "bad verbatim string" },
    { "null blob error", "!-1\r\n", "null blob error" },
    { "null push", ">-1\r\n", "null push" },
    { "a map key missing its value", "%2\r\n+a\r\n:1\r\n+b\r\n?\r\n", "unknown reply type" },
    { "a bad element deep in an array", "*2\r\n*2\r\n:1\r\n:x\r\n:3\r\n", "bad integer 'x'" },
  }
  for _, case in ipairs(cases) do
    it("refuses " .. case[1], function()
      refuses(case[2], case[3])
    end)
  end

  it("refuses a bulk string over a max_bulk limit before reading it", function()
    refuses("$11\r\n", "bulk string of 11 bytes is over the limit of 10", { max_bulk = 10 })
    refuses("*3\r\n", "aggregate of 3 elements is over the limit of 2", { max_elements = 2 })
  end)

  it("answers closed when the reply is cut off by the server", function()
    local seen = with_script({ function(conn) conn:write("*2\r\n:1\r\n"); conn:close() end },
      function(port)
        local r = assert(redis.connect({ port = port, timeout = 5 }))
        assert.same({ nil, "closed", "EOF" }, { r:get("x") })
        assert.same({ nil, "closed", "ECLOSED" }, { r:get("x") })
      end)
    assert.equal(1, #seen.commands)
  end)

  it("times out on a reply that stops half-way, and closes", function()
    local seen = with_script({ "*3\r\n$1\r\na\r\n" }, function(port, seen)
      local r = assert(redis.connect({ port = port, timeout = 0.2 }))
      local t0 = srv.monotime()
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { r:get("x") })
      assert.is_true(srv.monotime() - t0 >= 0.15)
      assert.same({ nil, "closed", "ECLOSED" }, { r:get("x") })
      wait_closed(seen)
    end)
    assert.equal(1, #seen.commands)
  end)

  it("encodes commands as RESP arrays of bulk strings", function()
    local seen = with_script({ "+OK\r\n", "+OK\r\n" }, function(port)
      local r = assert(redis.connect({ port = port, timeout = 5 }))
      assert.equal("OK", r:set("ké y", "a\r\nb"))
      assert.equal("OK", r:call("set", 7, 2.5))
      r:close()
    end)
    assert.equal("*3\r\n$3\r\nSET\r\n$5\r\nké y\r\n$4\r\na\r\nb\r\n", seen.commands[1])
    assert.equal("*3\r\n$3\r\nSET\r\n$1\r\n7\r\n$3\r\n2.5\r\n", seen.commands[2])
  end)

  it("raises on misuse with the caller's line", function()
    srv.run(function()
      local l = srv.tcp.listen({ port = 0 }, function(conn) conn:read() end)
      local r = assert(redis.connect({ port = select(2, l:address()), timeout = 5 }))
      local ok, err = pcall(function() local v = r:set("k", {}); return v end)
      assert.is_false(ok)
      assert.matches(
        "redis_protocol_spec.lua:%d+: bad argument #2 to 'set' %(string or number expected, got table%)", err)
      ok, err = pcall(function() return r:pipeline("x") end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'pipeline'", err)
      ok, err = pcall(redis.connect, { port = "x" })
      assert.is_false(ok)
      assert.matches("bad option 'port'", err)
      ok, err = pcall(redis.connect, { port = 1, resp = 4 })
      assert.is_false(ok)
      assert.matches("bad option 'resp'", err)
      r:release()
      ok, err = pcall(function() local v = r:get("k"); return v end)
      assert.is_false(ok)
      assert.matches("redis_protocol_spec.lua:%d+: redis: get on a client that was released", err)
      l:close()
    end)
  end)

  it("wakes one waiting task with core.waiter (the multiplexer's signal)", function()
    local core = require "luasrv.core"
    srv.run(function()
      local w = core.waiter()
      local t0 = srv.monotime()
      srv.after(0.05, function() w:wake() end)
      assert.is_true(w:wait())
      assert.is_true(srv.monotime() - t0 >= 0.04)
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { w:wait(0.02) })
      w:wake() -- before the wait: taken at once, once
      assert.is_true(w:wait(1))
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { w:wait(0) })
      -- One waiter, one waiting task: a second raises.
      local waiting = { done = false }
      srv.after(0, function()
        waiting.result = { w:wait(0.3) }
        waiting.done = true
      end)
      srv.sleep(0.01)
      local ok, err = pcall(w.wait, w, 1)
      assert.is_false(ok)
      assert.matches("another task is already waiting", err)
      w:wake()
      while not waiting.done do srv.sleep(0.01) end
      assert.same({ true }, waiting.result)
    end)
    local ok, err = pcall(function() return core.waiter():wait() end)
    assert.is_false(ok)
    assert.matches("wait must be called from a luasrv task", err)
  end)

  it("parses redis:// and unix:// URLs", function()
    assert.same({ host = "127.0.0.1", port = 6379, db = 0 }, redis.parse_url("redis://"))
    assert.same({ host = "h", port = 7000, db = 3, password = "pw" }, redis.parse_url("redis://:pw@h:7000/3"))
    assert.same({ host = "::1", port = 6379, db = 0, username = "u", password = "p:q" },
      redis.parse_url("redis://u:p:q@[::1]"))
    assert.same({ host = "h", port = 6379, db = 0, tls = true }, redis.parse_url("rediss://h"))
    assert.same({ path = "/run/r.sock", db = 2 }, redis.parse_url("unix:///run/r.sock?db=2"))
    assert.is_nil(redis.parse_url("http://h"))
    assert.is_nil(redis.parse_url("redis://h:1/x"))
  end)
end)
