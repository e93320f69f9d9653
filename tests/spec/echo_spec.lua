-- The echo example, run as a user would: `luasrv examples/echo.lua PORT`.
local srv = require "luasrv"
local helper = require "helper"

describe("examples/echo.lua", function()
  local server

  setup(function()
    server = helper.start(helper.path("examples/echo.lua"), { args = { "0" } })
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("prints its address", function()
    assert.matches("^tcp://127%.0%.0%.1:%d+$", server.url)
  end)

  it("greets, answers each line and closes on exit", function()
    srv.run(function()
      local conn = assert(srv.tcp.connect("127.0.0.1", server.port))
      conn:settimeout(5)
      assert.equal("Welcome!", conn:read()) -- as the tutorial's server: no newline
      for _, name in ipairs({ "michael", "tracy", "sarah" }) do
        conn:write(name, "\n")
        assert.equal("Hello, " .. name .. "!", conn:readline())
      end
      conn:write("exit\n")
      local line, err = conn:readline()
      assert.is_nil(line)
      assert.equal("closed", err)
      conn:close()
    end)
  end)

  it("runs the example client against it", function()
    local status, out = helper.exec({ helper.path("examples/echo_client.lua"), tostring(server.port) })
    assert.equal(0, status)
    assert.equal("Welcome!\nHello, michael!\nHello, tracy!\nHello, sarah!\n", out)
  end)

  it("answers the socket tutorial's Python client, which sends no newlines", function()
    local out = helper.capture(("python3 -c %s %d"):format(helper.shell_quote([[
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)  # not the tutorial's: a hang fails the spec instead
s.connect(("127.0.0.1", int(sys.argv[1])))
print(s.recv(1024).decode("utf-8"))
for data in [b"Michael", b"Tracy", b"Sarah"]:
    s.send(data)
    print(s.recv(1024).decode("utf-8"))
s.send(b"exit")
s.close()
]]), server.port))
    assert.equal("Welcome!\nHello, Michael!\nHello, Tracy!\nHello, Sarah!\n", out)
  end)

  it("answers nc-style lines one by one, several in one write too", function()
    srv.run(function()
      local conn = assert(srv.tcp.connect("127.0.0.1", server.port))
      conn:settimeout(5)
      assert.equal("Welcome!", conn:read())
      conn:write("one\ntwo\r\n")
      assert.equal("Hello, one!", conn:readline())
      assert.equal("Hello, two!", conn:readline())
      conn:write("exit\n")
      assert.is_nil(conn:readline())
      conn:close()
    end)
  end)
end)
