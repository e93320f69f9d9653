-- Conformance: a handler that fails is logged (file:line and a traceback on stderr), its
-- connection closes, and the server goes on serving everyone else.
local srv = require "luasrv"
local helper = require "helper"
local C = require "conformance"

local fixture = C.fixture("conf_handler_errors.lua")

local function dial(port)
  local conn, err, code = srv.tcp.connect("127.0.0.1", port, { timeout = 5 })
  assert(conn, ("connect failed: %s (%s)"):format(tostring(err), tostring(code)))
  conn:settimeout(5)
  return conn
end

local function round_trip(conn, text)
  conn:write(text, "\n")
  assert.equal("echo:" .. text, conn:readline())
end

-- Sends a command that makes the handler fail and checks the connection ends.
local function fail_with(port, command)
  local conn = dial(port)
  conn:write(command, "\n")
  local line, err, code = conn:readline()
  assert.is_nil(line, "the failing handler answered " .. tostring(line))
  assert.equal("closed", err)
  assert.equal("EOF", code)
  conn:close()
end

describe("a failing handler", function()
  local server

  before_each(function()
    server = helper.start(fixture)
  end)

  after_each(function()
    if server then server:cleanup() end
  end)

  local function wait_for_log(pattern, what)
    srv.run(function()
      C.wait_until(function() return server:stderr():find(pattern) ~= nil end, 5, what)
    end)
    return server:stderr()
  end

  it("closes only its own connection; other clients go on", function()
    srv.run(function()
      local a = dial(server.port)
      round_trip(a, "one")
      fail_with(server.port, "boom")
      round_trip(a, "two") -- the open connection is unaffected
      local b = dial(server.port)
      round_trip(b, "new client")
      a:close()
      b:close()
    end)
  end)

  it("logs file:line and a stack traceback on stderr", function()
    srv.run(function() fail_with(server.port, "boom") end)
    local line = C.line_of(fixture, 'error("boom")')
    local log = wait_for_log("stack traceback", "the error log")
    assert.matches("conf_handler_errors%.lua:" .. line .. ": boom\n", log)
    local msg_at = log:find("conf_handler_errors.lua:" .. line .. ": boom", 1, true)
    local tb_at = log:find("stack traceback:", 1, true)
    assert.is_true(tb_at > msg_at, "the traceback should follow the message")
    assert.matches("%[error%]", log)
    -- the traceback names the handler's line in the script
    assert.matches("conf_handler_errors%.lua:" .. line .. ": in ", log)
  end)

  it("names the listener and the peer in the error line", function()
    srv.run(function() fail_with(server.port, "boom") end)
    local log = wait_for_log("tcp handler for", "the error line")
    assert.matches("%[error%] tcp handler for tcp://127%.0%.0%.1:" .. server.port ..
                   " %(peer 127%.0%.0%.1:%d+%) failed: [^\n]*conf_handler_errors%.lua:%d+: boom", log)
  end)

  it("logs an error raised after the handler yielded, with the failing function's line", function()
    srv.run(function() fail_with(server.port, "boom-later") end)
    local line = C.line_of(fixture, 'error("boom after a sleep")')
    local log = wait_for_log("boom after a sleep", "the error log")
    assert.matches("conf_handler_errors%.lua:" .. line .. ": boom after a sleep", log)
    assert.matches("stack traceback:", log)
    assert.matches("fail_later", log)
  end)

  it("logs a non-string error value", function()
    srv.run(function() fail_with(server.port, "boom-table") end)
    local log = wait_for_log("table value", "the error log")
    assert.matches("error object is a table value", log)
  end)

  it("logs misuse inside a handler as a bad argument error with its line", function()
    srv.run(function() fail_with(server.port, "bad-arg") end)
    local line = C.line_of(fixture, "conn:write({})")
    local log = wait_for_log("bad argument", "the error log")
    assert.matches("conf_handler_errors%.lua:" .. line ..
      ": bad argument #1 to 'write' %(string expected, got table%)", log)
    srv.run(function() fail_with(server.port, "nil-call") end)
    log = wait_for_log("attempt to call", "the second error log")
    assert.matches("conf_handler_errors%.lua:" .. C.line_of(fixture, "missing()") ..
      ": attempt to call a nil value %(local 'missing'%)", log)
  end)

  it("still delivers what the handler wrote before failing", function()
    srv.run(function()
      local conn = dial(server.port)
      conn:write("write-then-boom\n")
      assert.equal("partial", conn:readline())
      assert.same({ nil, "closed", "EOF" }, { conn:readline() })
      conn:close()
    end)
    wait_for_log("boom after writing", "the error log")
  end)

  it("logs a lines() failure (an overlong line) with the script's file:line", function()
    srv.run(function()
      local conn = dial(server.port)
      conn:write(string.rep("x", 200), "\n")
      local line = conn:readline()
      assert.is_nil(line)
      conn:close()
    end)
    local log = wait_for_log("line too long", "the error log")
    assert.matches("stack traceback:", log)
    assert.matches("conf_handler_errors%.lua:" .. C.line_of(fixture, "for line in conn:lines()") ..
      ": line too long", log)
  end)

  it("survives many failing handlers, concurrent with good ones, and exits 0 on SIGTERM", function()
    srv.run(function()
      local recs = {}
      for i = 1, 40 do
        recs[#recs + 1] = C.spawn(fail_with, server.port, i % 2 == 0 and "boom" or "boom-later")
        recs[#recs + 1] = C.spawn(function()
          local conn = dial(server.port)
          for r = 1, 3 do round_trip(conn, ("good %d/%d"):format(i, r)) end
          conn:close()
        end)
      end
      C.join(recs, 20)
      local conn = dial(server.port)
      round_trip(conn, "still here")
      conn:close()
    end)
    local log = server:stderr()
    local _, n = log:gsub("stack traceback:", "")
    assert.equal(40, n)
    assert.equal(0, C.stop_within(server, "TERM", 10))
  end)
end)
