-- The CPU budget (--cpu-budget): every runaway handler is stopped, not only the first one a
-- coroutine ran; HTTP, TCP and timer callbacks alike; and SIGTERM/SIGINT end a server whose
-- handler spins.
local srv = require "luasrv"
local helper = require "helper"
local C = require "conformance"
local H = require "http_helper"

local fixture = C.fixture("budget_app.lua")

local function get(port, path)
  return H.exchange(port, H.get(path), { timeout = 10 })
end

describe("the CPU budget", function()
  local server, http_port, tcp_port

  before_each(function()
    server = helper.start(fixture, { flags = { "--cpu-budget", "0.2" }, listeners = 2 })
    http_port = tonumber(server.urls[1]:match(":(%d+)$"))
    tcp_port = tonumber(server.urls[2]:match(":(%d+)$"))
  end)

  after_each(function()
    if server then server:cleanup() end
  end)

  it("stops 20 runaway HTTP handlers in a row, interleaved with normal requests", function()
    srv.run(function()
      for i = 1, 20 do
        local r = get(http_port, i % 2 == 0 and "/spin" or "/spin-caught")
        assert.equal(500, r.status, "runaway request " .. i)
        assert.equal(200, get(http_port, "/ok").status, "normal request after runaway " .. i)
      end
    end)
    local log = server:stderr()
    -- "exceeded its CPU budget" (/spin) or "went on past its CPU budget" (/spin-caught)
    local stopped = select(2, log:gsub("its CPU budget", ""))
    assert.is_true(stopped >= 20, "budget errors logged: " .. stopped)
  end)

  it("stops 20 runaway TCP handlers in a row, interleaved with normal connections", function()
    srv.run(function()
      for i = 1, 20 do
        local conn = assert(srv.tcp.connect("127.0.0.1", tcp_port, { timeout = 5 }))
        conn:settimeout(5)
        conn:write("spin\n")
        local line, err = conn:readline()
        assert.is_nil(line)
        assert.equal("closed", err, "runaway connection " .. i)
        conn:close()
        local ok = assert(srv.tcp.connect("127.0.0.1", tcp_port, { timeout = 5 }))
        ok:settimeout(5)
        ok:write("hi\n")
        assert.equal("echo:hi", ok:readline(), "normal connection after runaway " .. i)
        ok:close()
        -- and HTTP keeps answering on the same loop
        assert.equal(200, get(http_port, "/ok").status)
      end
    end)
  end)

  it("stops runaway timer callbacks", function()
    srv.run(function()
      for i = 1, 5 do
        assert.equal(200, get(http_port, "/timer-spin").status)
        C.wait_until(function()
          local n = select(2, server:stderr():gsub("exceeded its CPU budget", ""))
          return n >= i
        end, 5, "the timer's budget error " .. i)
        assert.equal(200, get(http_port, "/ok").status)
      end
    end)
  end)

  it("SIGTERM while a handler spins: the server still exits, cleanly", function()
    srv.run(function()
      local c = H.connect(http_port, 10)
      c:send(H.get("/spin"))
      srv.sleep(0.05)
      local status = C.stop_within(server, "TERM", 3)
      assert.equal(0, status, server:stderr())
      c:close()
    end)
  end)
end)

describe("stop signals while a handler spins with no CPU budget", function()
  local server, http_port

  local function start(grace)
    server = helper.start(fixture, { flags = { "--cpu-budget", "0", "--grace", grace },
                                     listeners = 2 })
    http_port = tonumber(server.urls[1]:match(":(%d+)$"))
    srv.run(function()
      local c = H.connect(http_port, 10)
      c:send(H.get("/spin"))
      srv.sleep(0.1)
      c:close()
    end)
  end

  after_each(function()
    if server then server:cleanup() end
  end)

  it("a second SIGINT ends the process at once", function()
    start("5")
    os.execute(("kill -INT %d"):format(server.pid))
    os.execute("sleep 0.1")
    local status = C.stop_within(server, "INT", 1)
    assert.are_not.equal(0, status)
    assert.matches("second stop signal", server:stderr())
  end)

  it("SIGTERM alone ends the process shortly after the grace period", function()
    start("0.5")
    local status = C.stop_within(server, "TERM", 4)
    assert.are_not.equal(0, status)
    assert.matches("did not finish in time", server:stderr())
  end)
end)
