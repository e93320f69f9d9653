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
      assert.equal("Welcome!", conn:readline())
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
end)
