-- The line-oriented request server example: `luasrv examples/line_server.lua PORT`, one
-- request line in, one response line out.
local srv = require "luasrv"
local helper = require "helper"

describe("examples/line_server.lua", function()
  local server

  setup(function()
    server = helper.start(helper.path("examples/line_server.lua"), { args = { "0" } })
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  -- Runs fn(conn, ask) in srv.run with a fresh connection; ask(line) sends a request and
  -- returns the response line.
  local function session(fn)
    srv.run(function()
      local conn = assert(srv.tcp.connect("127.0.0.1", server.port))
      conn:settimeout(5)
      local function ask(line)
        conn:write(line, "\n")
        return conn:readline()
      end
      fn(conn, ask)
      conn:close()
    end)
  end

  it("prints its address", function()
    assert.matches("^tcp://127%.0%.0%.1:%d+$", server.url)
  end)

  it("answers UPPER, LOWER and REVERSE", function()
    session(function(_, ask)
      assert.equal("OK HELLO, WORLD!", ask("UPPER Hello, world!"))
      assert.equal("OK hello, world!", ask("LOWER Hello, WORLD!"))
      assert.equal("OK !dlrow ,olleh", ask("REVERSE hello, world!"))
      assert.equal("OK ", ask("UPPER"))
    end)
  end)

  it("takes command names in any case and keeps the text's spacing", function()
    session(function(_, ask)
      assert.equal("OK  TWO  SPACES ", ask("upper  two  spaces "))
      assert.equal("OK cba", ask("Reverse abc"))
    end)
  end)

  it("reverses UTF-8 text by characters and refuses other bytes", function()
    session(function(_, ask)
      assert.equal("OK éfac evïan", ask("REVERSE naïve café"))
      assert.equal("OK 界世 olleh", ask("REVERSE hello 世界"))
      assert.equal("ERR not UTF-8", ask("REVERSE \xff\xfe"))
      assert.equal("OK ", ask("REVERSE"))
      assert.equal("OK " .. ("ab€"):rep(500), ask("REVERSE " .. ("€ba"):rep(500)))
    end)
  end)

  it("tells the time in UTC", function()
    session(function(_, ask)
      local before = os.time()
      local reply = ask("TIME")
      local after = os.time()
      local y, mo, d, h, mi, s = reply:match("^OK (%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)Z$")
      assert(y, "not a UTC time: " .. tostring(reply))
      -- os.time reads a table as local time; the offset of !*t to *t undoes that.
      local stamp = os.time({ year = y, month = mo, day = d, hour = h, min = mi, sec = s })
      local offset = os.time(os.date("!*t", before)) - before
      assert.is_true(stamp - offset >= before - 1 and stamp - offset <= after + 1,
        ("%s is not between %d and %d"):format(reply, before, after))
    end)
  end)

  it("answers HELP and refuses unknown commands", function()
    session(function(_, ask)
      assert.equal("OK UPPER text, LOWER text, REVERSE text, TIME, HELP, QUIT", ask("help"))
      assert.equal("ERR unknown command", ask("FLY me to the moon"))
      assert.equal("ERR unknown command", ask(""))
      assert.equal("ERR unknown command", ask("UPPERCASE x"))
    end)
  end)

  it("answers pipelined requests in order, with LF or CRLF", function()
    session(function(conn)
      conn:write("UPPER a\r\nREVERSE abc\nNOPE\r\nLOWER B\n")
      assert.equal("OK A", conn:readline())
      assert.equal("OK cba", conn:readline())
      assert.equal("ERR unknown command", conn:readline())
      assert.equal("OK b", conn:readline())
    end)
  end)

  it("says bye and closes on QUIT", function()
    session(function(conn, ask)
      assert.equal("OK bye", ask("quit"))
      local line, err = conn:readline()
      assert.is_nil(line)
      assert.equal("closed", err)
    end)
  end)

  it("ignores requests after QUIT in the same write", function()
    session(function(conn)
      conn:write("UPPER x\nQUIT\nUPPER y\n")
      assert.equal("OK X", conn:readline())
      assert.equal("OK bye", conn:readline())
      assert.same({ nil, "closed", "EOF" }, { conn:readline() })
    end)
  end)

  it("serves a second client while the first one is in the middle of a line", function()
    srv.run(function()
      local slow = assert(srv.tcp.connect("127.0.0.1", server.port))
      local quick = assert(srv.tcp.connect("127.0.0.1", server.port))
      slow:settimeout(5)
      quick:settimeout(5)
      slow:write("UPPER sl")
      quick:write("REVERSE quick\n")
      assert.equal("OK kciuq", quick:readline())
      slow:write("ow\n")
      assert.equal("OK SLOW", slow:readline())
      slow:close()
      quick:close()
    end)
  end)

  it("drops a client whose request line is over 4 KiB, and logs it", function()
    session(function(conn, ask)
      assert.equal("OK " .. ("B"):rep(4000), ask("UPPER " .. ("b"):rep(4000)))
      conn:write("UPPER ", ("x"):rep(5000), "\n")
      local line, err = conn:readline()
      assert.is_nil(line)
      assert.equal("closed", err)
    end)
    local deadline = srv.monotime() + 5
    while not server:stderr():find("dropped: line too long", 1, true) and srv.monotime() < deadline do
      os.execute("sleep 0.02")
    end
    assert.matches("127%.0%.0%.1:%d+ dropped: line too long", server:stderr())
    assert.is_true(server:alive())
  end)

  -- Last, as it may take the server down: the client is gone by the time the answers go out,
  -- so the server's writes fail (EPIPE); that must end this connection, not the process.
  it("keeps serving after a client hangs up without reading its answers", function()
    srv.run(function()
      for _ = 1, 5 do -- each hang-up races the server's first answer: try a few
        local conn = srv.tcp.connect("127.0.0.1", server.port)
        if not conn then break end -- the server is gone: say so below
        conn:write(("UPPER x\n"):rep(200))
        conn:close()
        srv.sleep(0.1)
      end
      if not server:alive() then error("the server died: " .. tostring(server:wait())) end
      local again = assert(srv.tcp.connect("127.0.0.1", server.port))
      again:settimeout(5)
      again:write("UPPER still there\n")
      assert.equal("OK STILL THERE", again:readline())
      again:close()
    end)
  end)
end)
