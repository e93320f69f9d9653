-- The UDP examples run as a user would: `luasrv examples/timestamp_udp.lua PORT`, its client
-- `luasrv examples/timestamp_udp_client.lua PORT ...`, and `luasrv examples/udp_echo.lua PORT`.
local srv = require "luasrv"
local helper = require "helper"

local stamp = require "stamp_helper"
local stamps_between, assert_stamped = stamp.stamps_between, stamp.assert_stamped

local function lines_of(text)
  local lines = {}
  for line in text:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  return lines
end

describe("examples/timestamp_udp.lua", function()
  local server

  setup(function()
    server = helper.start(helper.path("examples/timestamp_udp.lua"), { args = { "0" } })
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("prints its address", function()
    assert.matches("^udp://127%.0%.0%.1:%d+$", server.url)
  end)

  it("stamps each datagram with the current date", function()
    srv.run(function()
      local sock = srv.udp.socket({ timeout = 5 })
      local before = srv.now()
      assert(sock:sendto("hello", "127.0.0.1", server.port))
      local first, peer = sock:recvfrom()
      assert(sock:sendto("two words\nand a newline", "127.0.0.1", server.port))
      local second = sock:recvfrom()
      assert(sock:sendto("", "127.0.0.1", server.port))
      local empty = sock:recvfrom()
      local dates = stamps_between(before, srv.now())
      assert_stamped(first, "hello", dates)
      assert_stamped(second, "two words\nand a newline", dates)
      assert_stamped(empty, "", dates)
      assert.equal(server.port, peer.port)
      sock:close()
    end)
  end)

  it("runs the example client with messages from its arguments", function()
    local before = srv.now()
    local status, out, err = helper.exec({ helper.path("examples/timestamp_udp_client.lua"),
      tostring(server.port), "hello", "sticky packets" })
    local dates = stamps_between(before, srv.now())
    assert.equal(0, status, err)
    local lines = lines_of(out)
    assert.equal(2, #lines, out)
    assert_stamped(lines[1], "hello", dates)
    assert_stamped(lines[2], "sticky packets", dates)
  end)

  it("runs the example client with lines from stdin", function()
    local before = srv.now()
    local status, out, err = helper.exec({ helper.path("examples/timestamp_udp_client.lua"),
      tostring(server.port) }, "first\n\nthird line\n")
    local dates = stamps_between(before, srv.now())
    assert.equal(0, status, err)
    local lines = lines_of(out)
    assert.equal(3, #lines, out)
    assert_stamped(lines[1], "first", dates)
    assert_stamped(lines[2], "", dates)
    assert_stamped(lines[3], "third line", dates)
  end)
end)

-- helper.exec with one more variable in the environment: exit status, stdout, stderr.
local function exec_with_env(assignment, args)
  local out, err = helper.tmpname(".out"), helper.tmpname(".err")
  local words = { "env", assignment }
  if os.getenv("LUASRV_SANITIZED") then words[#words + 1] = "LD_PRELOAD=" end
  words[#words + 1] = helper.shell_quote(helper.bin)
  for _, a in ipairs(args) do words[#words + 1] = helper.shell_quote(a) end
  local _, how, code = os.execute(("%s </dev/null >%s 2>%s"):format(table.concat(words, " "),
    helper.shell_quote(out), helper.shell_quote(err)))
  local o, e = helper.read_file(out), helper.read_file(err)
  os.remove(out)
  os.remove(err)
  return how == "exit" and code or ("signal " .. tostring(code)), o, e
end

describe("examples/timestamp_udp_client.lua", function()
  it("gives up after its timeout when no reply comes", function()
    -- A socket that is bound but never read: datagrams are accepted and nothing answers.
    srv.run(function()
      local silent = srv.udp.socket({ host = "127.0.0.1", port = 0 })
      local _, port = silent:address()
      local start = srv.monotime()
      local status, out, err = exec_with_env("TIMESTAMP_TIMEOUT=0.2",
        { helper.path("examples/timestamp_udp_client.lua"), tostring(port), "hello" })
      local took = srv.monotime() - start
      silent:close()
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("no reply from 127.0.0.1:" .. port .. " after 3 tries", err, 1, true)
      assert.is_true(took >= 0.55 and took < 5, "took " .. took)
    end)
  end)

  it("fails clearly when nothing listens", function()
    local port = srv.run(function()
      local probe = srv.udp.socket({ host = "127.0.0.1", port = 0 })
      local _, p = probe:address()
      probe:close()
      return p
    end)
    local status, out, err = helper.exec({ helper.path("examples/timestamp_udp_client.lua"),
      tostring(port), "hello" })
    assert.equal(1, status)
    assert.equal("", out)
    assert.matches("connection refused", err, 1, true)
  end)
end)

describe("examples/udp_echo.lua", function()
  local server

  setup(function()
    server = helper.start(helper.path("examples/udp_echo.lua"), { args = { "0" } })
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("sends each datagram back unchanged", function()
    assert.matches("^udp://127%.0%.0%.1:%d+$", server.url)
    srv.run(function()
      local sock = srv.udp.socket({ timeout = 5 })
      assert(sock:connect("127.0.0.1", server.port))
      for _, payload in ipairs({ "x", "", ("\0\1\2\255"):rep(300), ("e"):rep(60 * 1024) }) do
        assert(sock:send(payload))
        local reply = sock:recv()
        assert.equal(#payload, #reply)
        assert.is_true(reply == payload)
      end
      sock:close()
    end)
  end)
end)
