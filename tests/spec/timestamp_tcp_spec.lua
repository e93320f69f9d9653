-- The TCP timestamp example and its client, run as a user would:
-- `luasrv examples/timestamp_tcp.lua PORT` and `luasrv examples/timestamp_tcp_client.lua PORT ...`.
local srv = require "luasrv"
local helper = require "helper"

local stamp = require "stamp_helper"
local stamps_between, assert_stamped = stamp.stamps_between, stamp.assert_stamped

describe("examples/timestamp_tcp.lua", function()
  local server

  setup(function()
    server = helper.start(helper.path("examples/timestamp_tcp.lua"), { args = { "0" } })
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("prints its address", function()
    assert.matches("^tcp://127%.0%.0%.1:%d+$", server.url)
  end)

  it("stamps each line with the current date", function()
    srv.run(function()
      local conn = assert(srv.tcp.connect("127.0.0.1", server.port))
      conn:settimeout(5)
      local before = srv.now()
      conn:write("hello\n")
      local first = conn:readline()
      conn:write("two words  and spaces \n")
      local second = conn:readline()
      conn:write("\n")
      local empty = conn:readline()
      local dates = stamps_between(before, srv.now())
      assert_stamped(first, "hello", dates)
      assert_stamped(second, "two words  and spaces ", dates)
      assert_stamped(empty, "", dates)
      conn:close()
    end)
  end)

  it("answers several lines sent in one write, in order, and takes CRLF", function()
    srv.run(function()
      local conn = assert(srv.tcp.connect("127.0.0.1", server.port))
      conn:settimeout(5)
      local before = srv.now()
      conn:write("one\ntwo\r\nthree\n")
      local replies = { conn:readline(), conn:readline(), conn:readline() }
      local dates = stamps_between(before, srv.now())
      assert_stamped(replies[1], "one", dates)
      assert_stamped(replies[2], "two", dates)
      assert_stamped(replies[3], "three", dates)
      conn:shutdown()
      local line, err = conn:readline()
      assert.is_nil(line)
      assert.equal("closed", err)
      conn:close()
    end)
  end)

  it("serves clients independently", function()
    srv.run(function()
      local a = assert(srv.tcp.connect("127.0.0.1", server.port))
      local b = assert(srv.tcp.connect("127.0.0.1", server.port))
      a:settimeout(5)
      b:settimeout(5)
      local before = srv.now()
      a:write("from a, no newline")
      b:write("from b\n")
      local reply_b = b:readline()
      -- A message without a newline is answered as it came, without one (as the tutorial's
      -- server answers whatever one recv returned).
      local reply_a = a:read()
      local dates = stamps_between(before, srv.now())
      assert_stamped(reply_b, "from b", dates)
      assert_stamped(reply_a, "from a, no newline", dates)
      a:close()
      b:close()
    end)
  end)

  it("runs the example client with messages from its arguments", function()
    local before = srv.now()
    local status, out, err = helper.exec({ helper.path("examples/timestamp_tcp_client.lua"),
      tostring(server.port), "hello", "sticky packets" })
    local dates = stamps_between(before, srv.now())
    assert.equal(0, status, err)
    local lines = {}
    for line in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
    assert.equal(2, #lines, out)
    assert_stamped(lines[1], "hello", dates)
    assert_stamped(lines[2], "sticky packets", dates)
  end)

  it("runs the example client with lines from stdin", function()
    local before = srv.now()
    local status, out, err = helper.exec({ helper.path("examples/timestamp_tcp_client.lua"),
      tostring(server.port) }, "first\nsecond line\nthird\n")
    local dates = stamps_between(before, srv.now())
    assert.equal(0, status, err)
    local lines = {}
    for line in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
    assert.equal(3, #lines, out)
    assert_stamped(lines[1], "first", dates)
    assert_stamped(lines[2], "second line", dates)
    assert_stamped(lines[3], "third", dates)
  end)

  it("makes the client fail clearly when nothing listens", function()
    local port = srv.run(function()
      local listener = srv.tcp.listen({ port = 0 }, function() end)
      local _, p = listener:address()
      listener:close()
      return p
    end)
    local status, out, err = helper.exec({ helper.path("examples/timestamp_tcp_client.lua"),
      tostring(port), "hello" })
    assert.equal(1, status)
    assert.equal("", out)
    assert.matches("cannot connect to 127.0.0.1:" .. port .. ": connection refused", err, 1, true)
  end)

  -- Last, as it may take the server down: the client is gone by the time the answers go out,
  -- so the server's writes fail (EPIPE); that must end this connection, not the process.
  it("keeps serving after a client hangs up without reading its answers", function()
    srv.run(function()
      for _ = 1, 5 do -- each hang-up races the server's first answer: try a few
        local conn = srv.tcp.connect("127.0.0.1", server.port)
        if not conn then break end -- the server is gone: say so below
        conn:write(("hello\n"):rep(200))
        conn:close()
        srv.sleep(0.1)
      end
      if not server:alive() then error("the server died: " .. tostring(server:wait())) end
      local again = assert(srv.tcp.connect("127.0.0.1", server.port))
      again:settimeout(5)
      again:write("still there?\n")
      assert.matches("^%[.-%] still there%?$", again:readline())
      again:close()
    end)
  end)

  it("answers the socket tutorial's Python client, which sends no newlines", function()
    -- The tutorial's client: each input sent as it is, each reply printed.
    local out = helper.capture(("printf 'hello\\nworld\\n' | python3 -c %s %d"):format(
      helper.shell_quote([[
import sys
from socket import *
tcpCliSock = socket(AF_INET, SOCK_STREAM)
tcpCliSock.settimeout(5)  # not the tutorial's: a hang fails the spec instead
tcpCliSock.connect(("127.0.0.1", int(sys.argv[1])))
for data in sys.stdin.read().split():
    tcpCliSock.send(data.encode())
    data = tcpCliSock.recv(1024)
    if not data:
        break
    print(data.decode("utf-8"))
tcpCliSock.close()
]]), server.port))
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equal(2, #lines, out)
    assert.matches("^%[%a%a%a %a%a%a [ %d]%d %d%d:%d%d:%d%d %d%d%d%d%] hello$", lines[1])
    assert.matches("^%[.-%] world$", lines[2])
  end)
end)
