-- Conformance: the TCP API (srv.tcp.listen / srv.tcp.connect and the conn methods), against
-- in-process listeners and the real luasrv binary (tests/fixtures/conf_tcp_server.lua).
local srv = require "luasrv"
local helper = require "helper"
local C = require "conformance"

local with_listener, spawn, join, wait_until = C.with_listener, C.spawn, C.join, C.wait_until

-- A client connection with a generous timeout, so a missing answer fails instead of hanging.
local function dial(port, host)
  local conn, err, code = srv.tcp.connect(host or "127.0.0.1", port, { timeout = 5 })
  assert(conn, ("connect failed: %s (%s)"):format(tostring(err), tostring(code)))
  conn:settimeout(5)
  return conn
end

-- A handler that answers each line with "echo:<line>".
local function echo_handler(conn)
  for line in conn:lines() do
    conn:write("echo:", line, "\n")
  end
end

-- The peer sees the connection end: EOF ("closed") or a reset when unread data was dropped.
local function assert_sees_close(conn)
  local deadline = srv.monotime() + 5
  while true do
    local data, err, code = conn:read()
    if data == nil then
      assert.is_true(err == "closed" or code == "ECONNRESET",
        ("expected the connection to close, got %s (%s)"):format(tostring(err), tostring(code)))
      return code
    end
    assert.is_true(srv.monotime() < deadline, "the connection was not closed")
  end
end

local has_ipv6 = srv.run(function()
  local ok, l = pcall(srv.tcp.listen, { host = "::1", port = 0 }, function() end)
  if ok then l:close() end
  return ok
end)

describe("tcp lines", function()
  it("joins a line split across several segments", function()
    srv.run(function()
      with_listener({}, echo_handler, function(_, _, port)
        local conn = dial(port)
        conn:write("hel")
        srv.sleep(0.02)
        conn:write("lo wo")
        srv.sleep(0.02)
        conn:write("rld")
        srv.sleep(0.02)
        conn:write("\n")
        assert.equal("echo:hello world", conn:readline())
        conn:close()
      end)
    end)
  end)

  it("splits several lines that arrive in one segment (\\n and \\r\\n)", function()
    srv.run(function()
      with_listener({}, echo_handler, function(_, _, port)
        local conn = dial(port)
        conn:write("one\ntwo\r\n\nthree\n")
        assert.equal("echo:one", conn:readline())
        assert.equal("echo:two", conn:readline())
        assert.equal("echo:", conn:readline())
        assert.equal("echo:three", conn:readline())
        conn:close()
      end)
    end)
  end)

  it("gives a last unterminated line at EOF, then nil, 'closed', 'EOF'", function()
    srv.run(function()
      with_listener({}, function(conn)
        conn:write("first\nlast without newline")
      end, function(_, _, port)
        local conn = dial(port)
        assert.equal("first", conn:readline())
        assert.equal("last without newline", conn:readline())
        local line, err, code = conn:readline()
        assert.is_nil(line)
        assert.equal("closed", err)
        assert.equal("EOF", code)
        conn:close()
      end)
    end)
  end)

  it("lines() iterates every line and ends at EOF", function()
    srv.run(function()
      with_listener({}, function(conn)
        conn:write("a\nb\r\nc\n")
      end, function(_, _, port)
        local conn = dial(port)
        local got = {}
        for line in conn:lines() do got[#got + 1] = line end
        assert.same({ "a", "b", "c" }, got)
        conn:close()
      end)
    end)
  end)

  it("readline(max) applies a per-call limit and closes the connection past it", function()
    srv.run(function()
      with_listener({}, function(conn)
        conn:write("abcde\n0123456789\n")
        conn:read() -- wait for the client to go
      end, function(_, _, port)
        local conn = dial(port)
        assert.equal("abcde", conn:readline(5))
        local line, err, code = conn:readline(5)
        assert.is_nil(line)
        assert.equal("line too long", err)
        assert.equal("ELINETOOLONG", code)
        assert.same({ nil, "closed", "ECLOSED" }, { conn:readline() })
        conn:close()
      end)
    end)
  end)
end)

describe("tcp oversized lines", function()
  -- The handler reports each readline failure, then keeps the server busy with others.
  local function reporting_handler(results)
    return function(conn)
      while true do
        local line, err, code = conn:readline()
        if line == nil then
          results[#results + 1] = { err = err, code = code }
          return
        end
        conn:write("echo:", line, "\n")
      end
    end
  end

  it("answers nil, 'line too long' past 64 KiB, closes, and serves other clients", function()
    srv.run(function()
      local results = {}
      with_listener({}, reporting_handler(results), function(_, _, port)
        local other = dial(port)
        other:write("before\n")
        assert.equal("echo:before", other:readline())

        local conn = dial(port)
        conn:write(string.rep("x", 64 * 1024 + 100)) -- no newline at all
        assert_sees_close(conn)
        conn:close()
        wait_until(function() return #results >= 1 end, 5, "the server-side readline result")
        assert.equal("line too long", results[1].err)
        assert.equal("ELINETOOLONG", results[1].code)

        -- an open connection and a new one are both still served
        other:write("after\n")
        assert.equal("echo:after", other:readline())
        other:close()
        local again = dial(port)
        again:write("again\n")
        assert.equal("echo:again", again:readline())
        again:close()
      end)
    end)
  end)

  it("accepts a line of exactly 64 KiB", function()
    srv.run(function()
      local results = {}
      with_listener({}, reporting_handler(results), function(_, _, port)
        local conn = dial(port)
        local line = string.rep("y", 64 * 1024)
        conn:write(line, "\n")
        assert.equal("echo:" .. line, conn:readline(64 * 1024 + 10))
        conn:close()
      end)
    end)
  end)

  it("honours a listener's line_max", function()
    srv.run(function()
      local results = {}
      with_listener({ line_max = 10 }, reporting_handler(results), function(_, _, port)
        local conn = dial(port)
        conn:write("0123456789\n") -- exactly 10: fine
        assert.equal("echo:0123456789", conn:readline())
        conn:write("0123456789A\n") -- 11: too long
        assert_sees_close(conn)
        conn:close()
        wait_until(function() return #results >= 1 end, 5, "the server-side readline result")
        assert.equal("line too long", results[1].err)

        local next_conn = dial(port)
        next_conn:write("short\n")
        assert.equal("echo:short", next_conn:readline())
        next_conn:close()
      end)
    end)
  end)
  it("counts a \\r before the \\n against line_max, as documented", function()
    srv.run(function()
      local results = {}
      with_listener({ line_max = 10 }, reporting_handler(results), function(_, _, port)
        local conn = dial(port)
        conn:write("012345678\r\n") -- 9 bytes + "\r": exactly the limit
        assert.equal("echo:012345678", conn:readline())
        conn:write("0123456789\r\n") -- 10 bytes + "\r": one too many
        assert_sees_close(conn)
        conn:close()
        wait_until(function() return #results >= 1 end, 5, "the server-side readline result")
        assert.equal("line too long", results[1].err)
      end)
    end)
  end)
end)

describe("tcp against the luasrv binary", function()
  local server

  setup(function()
    server = helper.start(C.fixture("conf_tcp_server.lua"))
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  local function ping(port)
    local conn, err, code = srv.tcp.connect("127.0.0.1", port, { timeout = 5 })
    assert(conn, ("the server no longer accepts connections: %s (%s); stderr:\n%s"):format(
      tostring(err), tostring(code), server:stderr()))
    conn:settimeout(5)
    conn:write("ping\n")
    local line, rerr = conn:readline()
    conn:close()
    assert.equal("pong", line, "no pong: " .. tostring(rerr))
  end

  it("serves 200 concurrent clients, each doing several round trips", function()
    srv.run(function()
      local recs, ok_count = {}, 0
      for i = 1, 200 do
        recs[i] = spawn(function()
          local conn = dial(server.port)
          for round = 1, 3 do
            local msg = ("client %d round %d"):format(i, round)
            conn:write(msg, "\n")
            assert.equal("echo:" .. msg, conn:readline())
          end
          conn:close()
          ok_count = ok_count + 1
        end)
      end
      join(recs, 20)
      assert.equal(200, ok_count)
      ping(server.port)
    end)
  end)

  it("survives clients that disconnect while it writes several MiB to them", function()
    local own = helper.start(C.fixture("conf_tcp_server.lua"))
    local ok, err = pcall(srv.run, function()
      for round = 1, 3 do
        local conn = dial(own.port)
        conn:write(("big %d\n"):format(8 * 1024 * 1024))
        local data = conn:read(1000)
        assert.equal(1000, data and #data)
        conn:close()
        srv.sleep(0.05)
        local next_conn, cerr, code = srv.tcp.connect("127.0.0.1", own.port, { timeout = 5 })
        assert(next_conn, ("after client %d left mid-write the server is gone: %s (%s)"):format(
          round, tostring(cerr), tostring(code)))
        next_conn:settimeout(5)
        next_conn:write("ping\n")
        assert.equal("pong", next_conn:readline())
        next_conn:close()
        wait_until(function()
          local _, n = own:stderr():gsub("big: failed", "")
          return n >= round
        end, 5, "the server's write to fail")
      end
    end)
    local stderr = own:stderr()
    local status = C.stop_within(own, "TERM", 10)
    own:cleanup()
    assert(ok, tostring(err) .. "\nserver exit status: " .. tostring(status) .. "\nstderr:\n" .. stderr)
    assert.matches("big: failed E%u+ after %d+", stderr)
    assert.is_nil(stderr:find("big: done", 1, true))
    assert.equal(0, status)
  end)

  it("delivers a large write completely to a client that reads everything", function()
    srv.run(function()
      local conn = dial(server.port)
      local n = 3 * 1024 * 1024 + 7
      conn:write(("big %d\n"):format(n))
      local data = assert(conn:read(n))
      assert.equal(n, #data)
      assert.equal(string.rep("0123456789abcdef", 4), data:sub(1, 64))
      conn:close()
    end)
  end)
end)

describe("tcp write backpressure", function()
  it("writes 20 MiB to a slow reader with bounded memory", function()
    srv.run(function()
      local total = 20 * 1024 * 1024
      local chunk = string.rep("z", 64 * 1024)
      local report = {}
      with_listener({}, function(conn)
        local _, base = srv.memory()
        local peak = base
        for i = 1, total // #chunk do
          local ok, err = conn:write(chunk)
          if not ok then report.err = err; break end
          local _, core = srv.memory()
          if core > peak then peak = core end
          if i == 1 then report.first_write_returned = true end
        end
        report.growth = peak - base
        report.done = true
      end, function(_, _, port)
        local conn = dial(port)
        srv.sleep(0.2) -- let the writer run into a full socket
        local got, reads = 0, 0
        while got < total do
          local data, err = conn:read()
          assert(data, "read failed after " .. got .. " bytes: " .. tostring(err))
          got = got + #data
          reads = reads + 1
          if got < 2 * 1024 * 1024 and reads % 4 == 0 then srv.sleep(0.002) end -- slow at first
        end
        assert.equal(total, got)
        wait_until(function() return report.done end, 5, "the writer to finish")
        assert.is_nil(report.err)
        assert.is_true(report.growth < 8 * 1024 * 1024,
          ("the core buffered %d bytes for a slow reader"):format(report.growth))
        conn:close()
      end)
    end)
  end)

  it("once a send failed, every later write returns that error", function()
    srv.run(function()
      local results = {}
      with_listener({}, function(conn)
        conn:readline()
        local chunk = string.rep("f", 64 * 1024)
        for _ = 1, 2048 do -- up to 128 MiB; the client is gone long before
          local ok, _, code = conn:write(chunk)
          if not ok then results.first = code break end
        end
        results.second = select(3, conn:write("again"))
        results.frame = select(3, conn:write_frame("u16", "again"))
        results.close = conn:close()
      end, function(_, _, port)
        local conn = dial(port)
        conn:write("go\n")
        assert(conn:read(1000))
        conn:close() -- with unread data: the server's socket gets a reset
        wait_until(function() return results.close ~= nil end, 10, "the server's writes to fail")
        assert.is_true(results.first == "ECONNRESET" or results.first == "EPIPE",
          "first failure: " .. tostring(results.first))
        assert.equal(results.first, results.second)
        assert.equal(results.first, results.frame)
        assert.is_true(results.close)
      end)
    end)
  end)

  it("write returns the connection and sends strings and numbers in order", function()
    srv.run(function()
      with_listener({}, function(conn)
        local ret = conn:write("a", 1, "b", 2.5, "\n")
        assert(ret == conn, "write did not return the connection")
        conn:write("x"):write("y"):write("\n")
      end, function(_, _, port)
        local conn = dial(port)
        assert.equal("a1b2.5", conn:readline())
        assert.equal("xy", conn:readline())
        conn:close()
      end)
    end)
  end)
end)

describe("tcp reads", function()
  it("read(n) collects exactly n bytes across segments", function()
    srv.run(function()
      local got = {}
      with_listener({}, function(conn)
        got[1] = conn:read(5)
        got[2] = conn:read(3)
        conn:write("done\n")
        conn:read()
      end, function(_, _, port)
        local conn = dial(port)
        conn:write("ab")
        srv.sleep(0.02)
        conn:write("c")
        srv.sleep(0.02)
        conn:write("defgh")
        assert.equal("done", conn:readline())
        assert.same({ "abcde", "fgh" }, got)
        conn:close()
      end)
    end)
  end)

  it("read() returns what is available; read(n) at EOF gives the partial data as 4th value", function()
    srv.run(function()
      with_listener({}, function(conn)
        conn:write("abc")
      end, function(_, _, port)
        local conn = dial(port)
        local a, err, code, partial = conn:read(10)
        assert.is_nil(a)
        assert.equal("closed", err)
        assert.equal("EOF", code)
        assert.equal("abc", partial)
        conn:close()
      end)
    end)
    srv.run(function()
      with_listener({}, function(conn)
        conn:write("xyz")
        srv.sleep(0.05)
      end, function(_, _, port)
        local conn = dial(port)
        assert.equal("xyz", conn:read(0))
        assert.same({ nil, "closed", "EOF" }, { conn:read() })
        assert.equal("", conn:read("*a"))
        conn:close()
      end)
    end)
  end)

  it("read('a') returns everything until the peer closes; '' when nothing came", function()
    srv.run(function()
      local got = {}
      with_listener({}, function(conn)
        got.data = conn:read("a")
        conn:write(#got.data, "\n")
      end, function(_, _, port)
        local conn = dial(port)
        local parts = {}
        for i = 1, 50 do parts[i] = ("part %d;"):format(i) end
        for i = 1, 50 do conn:write(parts[i]) end
        conn:shutdown()
        local want = table.concat(parts)
        assert.equal(tostring(#want), conn:readline())
        assert.equal(want, got.data)
        assert.equal("", conn:read("a"))
        conn:close()
      end)
    end)
  end)

  it("read('a') of 1 MiB", function()
    srv.run(function()
      local payload = string.rep("0123456789", 100 * 1024 + 3)
      with_listener({}, function(conn)
        conn:write(payload)
      end, function(_, _, port)
        local conn = dial(port)
        local data = conn:read("a")
        assert.equal(#payload, #data)
        assert.is_true(data == payload)
        conn:close()
      end)
    end)
  end)
end)

describe("tcp frames", function()
  -- Reads "<fmt>\n" then a frame in that format and sends it back; a failure is recorded.
  local failures = {}
  local function frame_echo(conn)
    while true do
      local fmt = conn:readline()
      if not fmt then return end
      local data, err, code = conn:read_frame(fmt)
      if data == nil then
        failures[#failures + 1] = { err = err, code = code }
        return
      end
      conn:write_frame(fmt, data)
    end
  end

  it("writes the length header in the asked format", function()
    srv.run(function()
      with_listener({}, function(conn)
        conn:write_frame("u16", "hello")
        conn:write_frame("u32", "hi")
        conn:write_frame("u16le", "abc")
        conn:write_frame("u8", "")
        conn:write_frame("u64", "q")
      end, function(_, _, port)
        local conn = dial(port)
        assert.equal("\0\5hello", conn:read(7))
        assert.equal("\0\0\0\2hi", conn:read(6))
        assert.equal("\3\0abc", conn:read(5))
        assert.equal("\0", conn:read(1))
        assert.equal("\0\0\0\0\0\0\0\1q", conn:read(9))
        conn:close()
      end)
    end)
  end)

  it("round-trips u16, u32 and little-endian frames, empty and large", function()
    srv.run(function()
      with_listener({}, frame_echo, function(_, _, port)
        local conn = dial(port)
        local cases = {
          { "u16", "hello" }, { "u16", "" }, { "u16", string.rep("a", 65535) },
          { "u32", "world" }, { "u32", string.rep("b", 300000) },
          { "u16le", "little" }, { "u32le", "endian" }, { "u8", string.rep("c", 255) },
        }
        for _, case in ipairs(cases) do
          conn:write(case[1], "\n")
          conn:write_frame(case[1], case[2])
          local data, err = conn:read_frame(case[1])
          assert(data, ("%s frame of %d bytes: %s"):format(case[1], #case[2], tostring(err)))
          assert.equal(#case[2], #data)
          assert.is_true(data == case[2])
        end
        conn:close()
      end)
    end)
  end)

  it("reads a frame whose header and payload arrive in separate segments", function()
    srv.run(function()
      with_listener({}, frame_echo, function(_, _, port)
        local conn = dial(port)
        conn:write("u32\n")
        conn:write("\0\0")
        srv.sleep(0.02)
        conn:write("\0\6ab")
        srv.sleep(0.02)
        conn:write("cdef")
        assert.equal("abcdef", conn:read_frame("u32"))
        conn:close()
      end)
    end)
  end)

  it("refuses a frame above the listener's frame_max and closes the connection", function()
    srv.run(function()
      with_listener({ frame_max = 100 }, frame_echo, function(_, _, port)
        local conn = dial(port)
        conn:write("u32\n")
        conn:write_frame("u32", string.rep("x", 100))
        assert.equal(string.rep("x", 100), conn:read_frame("u32"))
        conn:write("u32\n")
        conn:write("\0\0\0\101") -- announces 101 bytes, sends none
        assert_sees_close(conn)
        conn:close()
        wait_until(function() return #failures > 0 end, 5, "the server-side read_frame result")
        assert.equal("frame too large", failures[#failures].err)
        assert.equal("EFRAMETOOLARGE", failures[#failures].code)
      end)
    end)
  end)

  it("read_frame(fmt, max) applies a per-call limit", function()
    srv.run(function()
      with_listener({}, function(conn)
        conn:write_frame("u16", "abcd")
        conn:read()
      end, function(_, _, port)
        local conn = dial(port)
        local data, err, code = conn:read_frame("u16", 3)
        assert.is_nil(data)
        assert.equal("frame too large", err)
        assert.equal("EFRAMETOOLARGE", code)
        assert.same({ nil, "closed", "ECLOSED" }, { conn:read_frame("u16") })
        conn:close()
      end)
    end)
  end)

  it("gives nil, 'closed', 'EOF' when the peer closes inside a frame", function()
    srv.run(function()
      with_listener({}, function(conn)
        conn:write("\0\10abc")
      end, function(_, _, port)
        local conn = dial(port)
        local data, err, code = conn:read_frame("u16")
        assert.is_nil(data)
        assert.equal("closed", err)
        assert.equal("EOF", code)
        conn:close()
      end)
    end)
  end)

  it("raises on a payload too long for the header and on an unknown format", function()
    srv.run(function()
      with_listener({}, function(conn) conn:read() end, function(_, _, port)
        local conn = dial(port)
        local ok, err = pcall(function() return conn:write_frame("u8", string.rep("x", 256)) end)
        assert.is_false(ok)
        assert.matches("bad argument #2 to 'write_frame' %(data too long", err)
        ok, err = pcall(function() return conn:write_frame("u12", "x") end)
        assert.is_false(ok)
        assert.matches("bad argument #1 to 'write_frame'", err)
        ok, err = pcall(function() return conn:read_frame("i32") end)
        assert.is_false(ok)
        assert.matches("bad argument #1 to 'read_frame'", err)
        conn:close()
      end)
    end)
  end)
end)

describe("tcp timeouts", function()
  it("settimeout makes a read give nil, 'timeout', 'ETIMEDOUT'; the connection stays usable", function()
    srv.run(function()
      with_listener({}, function(conn)
        assert(conn:readline())
        conn:write("la") -- part of the line now, the rest later
        srv.sleep(0.3)
        conn:write("te\n")
        conn:read()
      end, function(_, _, port)
        local conn = dial(port)
        conn:write("go\n")
        assert.equal(conn, conn:settimeout(0.05))
        local line, err, code = conn:readline()
        assert.is_nil(line)
        assert.equal("timeout", err)
        assert.equal("ETIMEDOUT", code)
        assert.same({ nil, "timeout", "ETIMEDOUT" }, { conn:read(5) }) -- only "la" is here
        conn:settimeout(nil) -- no limit
        assert.equal("late", conn:readline())
        conn:write("x") -- still writable
        conn:close()
      end)
    end)
  end)

  it("a write blocked on a peer that does not read gives nil, 'timeout'; the data is still sent", function()
    srv.run(function()
      local release, received = false, nil
      with_listener({}, function(conn)
        wait_until(function() return release end, 10, "the release")
        received = #assert(conn:read("a"))
      end, function(_, _, port)
        local conn = dial(port)
        conn:settimeout(0.2)
        local chunk = string.rep("t", 256 * 1024)
        local res, accepted = nil, 0
        for _ = 1, 256 do -- up to 64 MiB: far more than the socket buffers hold
          res = { conn:write(chunk) }
          if res[1] == nil then break end
          accepted = accepted + #chunk
        end
        assert.same({ nil, "timeout", "ETIMEDOUT" }, res)
        release = true
        conn:close() -- queued output is still sent before the socket closes
        wait_until(function() return received ~= nil end, 10, "the server to read everything")
        assert.equal(accepted + #chunk, received)
      end)
    end)
  end)

  it("a listener's timeout applies to each server-side read", function()
    srv.run(function()
      local seen = {}
      with_listener({ timeout = 0.2 }, function(conn)
        local _, err, code = conn:readline()
        seen.err, seen.code = err, code
        conn:write("server timed out: ", tostring(err), "\n")
        local line = conn:readline()
        conn:write("then got: ", tostring(line), "\n")
      end, function(_, _, port)
        local conn = dial(port)
        assert.equal("server timed out: timeout", conn:readline())
        assert.equal("ETIMEDOUT", seen.code)
        conn:write("hello\n")
        assert.equal("then got: hello", conn:readline())
        conn:close()
      end)
    end)
  end)
end)

describe("tcp closed connections", function()
  it("every operation on a closed conn answers nil, 'closed'", function()
    srv.run(function()
      with_listener({}, function(conn) conn:read() end, function(_, _, port)
        local conn = dial(port)
        assert.is_true(conn:close())
        local ops = {
          read = { conn:read() }, read_n = { conn:read(3) }, read_a = { conn:read("a") },
          readline = { conn:readline() }, read_frame = { conn:read_frame("u16") },
          write = { conn:write("x") }, write_frame = { conn:write_frame("u16", "x") },
          peer = { conn:peer() }, shutdown = { conn:shutdown() },
        }
        for name, res in pairs(ops) do
          assert.is_nil(res[1], name .. " returned a value on a closed conn")
          assert.equal("closed", res[2], name)
          assert.equal("ECLOSED", res[3], name)
        end
        assert.is_true(conn:close()) -- closing twice is fine
        assert.equal(conn, conn:settimeout(1))
        assert.equal("luasrv.Conn (closed)", tostring(conn))
        local ok = pcall(function() for _ in conn:lines() do end end)
        assert.is_true(ok, "lines() on a closed conn should just end")
      end)
    end)
  end)

  it("a read blocked in one task answers nil, 'closed' when another task closes the conn", function()
    srv.run(function()
      with_listener({}, function(conn) conn:read() end, function(_, _, port)
        local conn = dial(port)
        local res
        local rec = spawn(function() res = { conn:readline() } end)
        srv.sleep(0.05)
        assert.is_nil(res)
        conn:close()
        join({ rec }, 5)
        assert.same({ nil, "closed", "ECLOSED" }, res)
      end)
    end)
  end)

  it("shutdown() sends EOF but keeps reading; write after it answers nil, 'closed'", function()
    srv.run(function()
      with_listener({}, function(conn)
        local data = conn:read("a")
        conn:write("got ", data, "\n")
      end, function(_, _, port)
        local conn = dial(port)
        conn:write("abc")
        assert.is_true(conn:shutdown())
        assert.same({ nil, "closed", "ECLOSED" }, { conn:write("more") })
        assert.equal("got abc", conn:readline())
        conn:close()
      end)
    end)
  end)

  it("output queued before the handler returns still reaches the client", function()
    srv.run(function()
      local big = string.rep("q", 2 * 1024 * 1024)
      with_listener({}, function(conn)
        conn:write(big, "\nend\n")
      end, function(_, _, port)
        local conn = dial(port)
        srv.sleep(0.1)
        local data = conn:read("a")
        assert.equal(#big + 5, #data)
        assert.equal("\nend\n", data:sub(-5))
        conn:close()
      end)
    end)
  end)
  it("a blocked write answers nil, 'closed' when another task closes the conn", function()
    srv.run(function()
      with_listener({}, function(conn)
        srv.sleep(0.5) -- does not read for a while: the client's writes fill the socket
        conn:read("a")
      end, function(_, _, port)
        local conn = dial(port)
        local res
        local rec = spawn(function()
          local chunk = string.rep("w", 256 * 1024)
          for _ = 1, 64 do
            res = { conn:write(chunk) }
            if res[1] == nil then return end
          end
        end)
        srv.sleep(0.1)
        assert.is_nil(res and res[2], "the writer should still be blocked")
        conn:close()
        join({ rec }, 5)
        assert.same({ nil, "closed", "ECLOSED" }, res)
      end)
    end)
  end)

  it("a conn kept after its handler returned answers nil, 'closed'", function()
    srv.run(function()
      local kept
      with_listener({}, function(conn)
        kept = conn
        conn:write("bye\n")
      end, function(_, _, port)
        local conn = dial(port)
        assert.equal("bye", conn:readline())
        assert.same({ nil, "closed", "EOF" }, { conn:readline() })
        conn:close()
        srv.sleep(0.02)
        assert.same({ nil, "closed", "ECLOSED" }, { kept:write("late") })
        assert.same({ nil, "closed", "ECLOSED" }, { kept:readline() })
        assert.same({ nil, "closed", "ECLOSED" }, { kept:peer() })
        assert.is_true(kept:close())
      end)
    end)
  end)

  it("closes a conn when it goes out of scope (<close>) or is collected", function()
    srv.run(function()
      local ended = 0
      with_listener({}, function(conn)
        conn:read("a")
        ended = ended + 1
      end, function(_, _, port)
        do
          local conn <close> = dial(port)
          conn:write("x")
        end
        wait_until(function() return ended == 1 end, 5, "the server to see the <close>")
        dial(port):write("y") -- dropped at once
        srv.sleep(0.02)
        collectgarbage()
        collectgarbage()
        wait_until(function() return ended == 2 end, 5, "the server to see the collected conn")
      end)
    end)
  end)
end)

describe("tcp misuse", function()
  -- fn is called as written (conn:write(...)), so messages count arguments as Lua users do.
  local function raises(pattern, fn)
    local ok, err = pcall(fn)
    assert.is_false(ok, "expected an error matching " .. pattern)
    assert.matches(pattern, tostring(err))
  end

  it("raises 'bad argument' errors for wrong argument types", function()
    srv.run(function()
      with_listener({}, function(conn) conn:read() end, function(_, _, port)
        local conn = dial(port)
        raises("bad argument #1 to 'write' %(string expected, got table%)",
          function() return conn:write({}) end)
        raises("bad argument #2 to 'write' %(string expected, got boolean%)",
          function() return conn:write("a", true) end)
        raises("bad argument #1 to 'read'", function() return conn:read(-1) end)
        raises("bad argument #1 to 'read'", function() return conn:read("x") end)
        raises("bad argument #1 to 'read'", function() return conn:read({}) end)
        raises("bad argument #1 to 'readline'", function() return conn:readline(0) end)
        raises("bad argument #1 to 'settimeout'", function() return conn:settimeout("soon") end)
        raises("timeout is NaN", function() return conn:settimeout(0 / 0) end)
        raises("bad argument #2 to 'read_frame'", function() return conn:read_frame("u16", -1) end)
        raises("bad argument #1 to 'read' %(luasrv.Conn expected, got table%)",
          function() return conn.read({}) end)
        raises("luasrv.Conn expected", function() return conn.write("x") end)
        -- the connection is still fine afterwards
        assert.equal(conn, conn:write("ok"))
        conn:close()
        -- argument checks come before the closed check
        raises("bad argument #1 to 'write'", function() return conn:write({}) end)
      end)
    end)
  end)

  it("raises for bad listen and connect arguments", function()
    srv.run(function()
      local function h() end
      raises("bad argument #1 to 'listen'", function() return srv.tcp.listen({}, h) end)
      raises("bad argument #1 to 'listen' %(port out of range%)",
        function() return srv.tcp.listen({ port = 70000 }, h) end)
      raises("bad argument #2 to 'listen'", function() return srv.tcp.listen({ port = 0 }) end)
      raises("bad argument #1 to 'listen'", function() return srv.tcp.listen("9999", h) end)
      raises("line_max", function() return srv.tcp.listen({ port = 0, line_max = 0 }, h) end)
      raises("port out of range", function() return srv.tcp.connect("127.0.0.1", 70000) end)
      raises("port out of range", function() return srv.tcp.connect("127.0.0.1", 0) end)
      raises("bad argument #2 to 'connect'",
        function() return srv.tcp.connect("127.0.0.1", "http") end)
      raises("connect: expected a host and a port, or a path",
        function() return srv.tcp.connect({ port = 80 }) end)
      raises("invalid argument",
        function() return srv.tcp.listen({ host = "example.com", port = 0 }, h) end)
    end)
  end)

  it("raises when the address is already in use", function()
    srv.run(function()
      with_listener({}, function() end, function(_, _, port)
        local ok, err = pcall(srv.tcp.listen, { port = port }, function() end)
        assert.is_false(ok)
        assert.matches("cannot listen on 127%.0%.0%.1:" .. port, err)
      end)
    end)
  end)

  it("refuses a second task reading the same connection", function()
    srv.run(function()
      with_listener({}, function(conn) conn:read() end, function(_, _, port)
        local conn = dial(port)
        local rec = spawn(function() conn:readline() end)
        srv.sleep(0.02)
        local ok, err = pcall(conn.readline, conn)
        assert.is_false(ok)
        assert.matches("another task is already reading", err)
        conn:close()
        join({ rec }, 5)
      end)
    end)
  end)

  it("refuses blocking calls outside a task", function()
    local conn
    srv.run(function()
      with_listener({}, function(c) c:read() end, function(_, _, port)
        conn = dial(port)
        local co = coroutine.wrap(function() return pcall(srv.sleep, 0.01) end)
        local ok, err = co()
        assert.is_false(ok)
        assert.matches("must be called from a luasrv task", err)
      end)
    end)
    local ok, err = pcall(srv.tcp.connect, "127.0.0.1", 9)
    assert.is_false(ok)
    assert.matches("must be called from a luasrv task", err)
    srv.run(function() conn:close() end)
  end)
end)

describe("tcp addresses", function()
  it("peer() gives host and port on both sides; the listener knows its address", function()
    srv.run(function()
      local seen = {}
      with_listener({}, function(conn)
        seen.host, seen.port = conn:peer()
        conn:write("hi\n")
        conn:read()
      end, function(l, host, port)
        assert.equal("127.0.0.1", host)
        assert.is_true(math.type(port) == "integer" and port > 0 and port < 65536)
        assert.equal("tcp://127.0.0.1:" .. port, l:url())
        local conn = dial(port)
        assert.equal("hi", conn:readline())
        local phost, pport = conn:peer()
        assert.equal("127.0.0.1", phost)
        assert.equal(port, pport)
        assert.equal("127.0.0.1", seen.host)
        assert.is_true(math.type(seen.port) == "integer" and seen.port > 0 and seen.port ~= port)
        conn:close()
        assert.equal("luasrv.Listener (tcp://127.0.0.1:" .. port .. ")", tostring(l))
        assert.is_true(l:close())
        assert.is_true(l:close()) -- closing again does nothing
        assert.same({ nil, "closed", "ECLOSED" }, { l:address() })
        assert.same({ nil, "closed", "ECLOSED" }, { l:url() })
        srv.sleep(0.01)
        assert.same({ nil, "closed", "ECLOSED" }, { l:url() })
        assert.equal("luasrv.Listener (closed)", tostring(l))
      end)
    end)
  end)

  it("listens and connects over IPv6 (::1)", function()
    if not has_ipv6 then pending("no IPv6 loopback on this machine") end
    srv.run(function()
      local seen = {}
      with_listener({ host = "::1" }, function(conn)
        seen.host = conn:peer()
        echo_handler(conn)
      end, function(l, host, port)
        assert.equal("::1", host)
        assert.equal("tcp://[::1]:" .. port, l:url())
        local conn = dial(port, "::1")
        conn:write("six\n")
        assert.equal("echo:six", conn:readline())
        assert.equal("::1", (conn:peer()))
        assert.equal("::1", seen.host)
        conn:close()
      end)
    end)
  end)

  it("listens and connects on a Unix-domain socket path", function()
    local path = helper.tmpname(".sock")
    srv.run(function()
      local seen = {}
      with_listener({ path = path }, function(conn)
        seen.peer = conn:peer()
        echo_handler(conn)
      end, function(l)
        assert.equal("unix:" .. path, l:url())
        assert.equal(path, (l:address()))
        local conn = assert(srv.tcp.connect({ path = path, timeout = 5 }))
        conn:settimeout(5)
        conn:write("via unix\n")
        assert.equal("echo:via unix", conn:readline())
        assert.equal(path, (conn:peer()))
        assert.equal("unix", seen.peer) -- the client's socket has no name
        conn:close()
      end)
      srv.sleep(0.02)
    end)
    assert.is_false(os.execute("test -e " .. helper.shell_quote(path)) == true,
      "the socket file is left behind after close")
  end)

  it("replaces a stale socket file left by a killed server", function()
    local path = helper.tmpname(".sock")
    local old = helper.start(C.fixture("conf_unix_listener.lua"), { args = { path } })
    assert.equal("unix:" .. path, old.url)
    old:stop("KILL")
    old:cleanup()
    assert.is_true(os.execute("test -S " .. helper.shell_quote(path)) == true,
      "the killed server left no socket file (test premise)")
    srv.run(function()
      with_listener({ path = path }, echo_handler, function()
        local conn = assert(srv.tcp.connect({ path = path, timeout = 5 }))
        conn:settimeout(5)
        conn:write("fresh\n")
        assert.equal("echo:fresh", conn:readline())
        conn:close()
      end)
    end)
  end)

  it("does not replace a file at the path that is not a socket", function()
    local path = helper.tmpname(".sock")
    helper.write_file(path, "precious")
    local ok, err = pcall(srv.run, function()
      return srv.tcp.listen({ path = path }, function() end)
    end)
    local content = helper.read_file(path)
    os.remove(path)
    assert.is_false(ok)
    assert.matches("cannot listen on unix:", err)
    assert.equal("precious", content)
  end)

  it("connect to a Unix path that does not exist: nil, msg, 'ENOENT'", function()
    srv.run(function()
      local conn, msg, code = srv.tcp.connect({ path = helper.tmpname(".nosock"), timeout = 5 })
      assert.is_nil(conn)
      assert.equal("string", type(msg))
      assert.equal("ENOENT", code)
    end)
  end)

  it("connect to a closed port: nil, msg, 'ECONNREFUSED'", function()
    srv.run(function()
      local l = srv.tcp.listen({ port = 0 }, function() end)
      local _, port = l:address()
      l:close()
      srv.sleep(0.02)
      local conn, msg, code = srv.tcp.connect("127.0.0.1", port, { timeout = 5 })
      assert.is_nil(conn)
      assert.equal("string", type(msg))
      assert.equal("ECONNREFUSED", code)
    end)
  end)

  it("connect takes a table too; listen accepts host 'localhost' and '*'", function()
    srv.run(function()
      for _, host in ipairs({ "localhost", "*" }) do
        with_listener({ host = host }, echo_handler, function(_, lhost, port)
          assert.equal(host == "*" and "0.0.0.0" or "127.0.0.1", lhost)
          local conn = assert(srv.tcp.connect({ host = "127.0.0.1", port = port, timeout = 5 }))
          conn:settimeout(5)
          conn:write(host, "\n")
          assert.equal("echo:" .. host, conn:readline())
          conn:close()
        end)
      end
    end)
  end)

  it("connects by host name (localhost)", function()
    srv.run(function()
      with_listener({}, echo_handler, function(_, _, port)
        local conn = dial(port, "localhost")
        conn:write("by name\n")
        assert.equal("echo:by name", conn:readline())
        conn:close()
      end)
    end)
  end)

  it("a connect that gets no answer ends with nil, 'timeout', 'ETIMEDOUT'", function()
    local server = helper.start(C.fixture("conf_stuck_listener.lua"))
    local ok, err = pcall(srv.run, function()
      -- nothing is accepted: the kernel's queue fills, then SYNs go unanswered
      local conns, result = {}, nil
      for _ = 1, 16 do
        local t0 = srv.monotime()
        local conn, msg, code = srv.tcp.connect("127.0.0.1", server.port, { timeout = 0.3 })
        if conn then
          conns[#conns + 1] = conn
        else
          result = { msg = msg, code = code, elapsed = srv.monotime() - t0 }
          break
        end
      end
      for _, c in ipairs(conns) do c:close() end
      assert(result, "every connect succeeded; the accept queue never filled")
      assert.equal("timeout", result.msg)
      assert.equal("ETIMEDOUT", result.code)
      assert.is_true(result.elapsed >= 0.25 and result.elapsed < 5, "elapsed " .. result.elapsed)
    end)
    server:cleanup()
    assert(ok, err)
  end)
end)
