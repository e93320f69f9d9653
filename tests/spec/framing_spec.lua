-- The length-prefixed echo example: `luasrv examples/framing.lua PORT` serves, and
-- `luasrv examples/framing.lua client PORT ...` sends messages in one write.
local srv = require "luasrv"
local helper = require "helper"

-- A message as it goes on the wire: u32 big-endian length, then the bytes.
local function frame(payload) return string.pack(">s4", payload) end

describe("examples/framing.lua", function()
  local server

  setup(function()
    server = helper.start(helper.path("examples/framing.lua"), { args = { "0" } })
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  -- Runs fn(conn) in srv.run with a fresh connection to the example.
  local function session(fn)
    srv.run(function()
      local conn = assert(srv.tcp.connect("127.0.0.1", server.port))
      conn:settimeout(5)
      fn(conn)
      conn:close()
    end)
  end

  it("prints its address", function()
    assert.matches("^tcp://127%.0%.0%.1:%d+$", server.url)
  end)

  it("echoes a message behind a 4-byte big-endian length", function()
    session(function(conn)
      conn:write("\0\0\0\5hello")
      assert.equal("\0\0\0\5hello", conn:read(9))
      conn:write_frame("u32", "again")
      assert.equal("again", conn:read_frame("u32"))
    end)
  end)

  it("reassembles a message split across several TCP segments", function()
    session(function(conn)
      local payload = "split into pieces"
      local wire = frame(payload)
      -- Header in two halves, then the payload in three pieces, each pause long enough for
      -- the server to have read what came so far.
      for _, piece in ipairs({ wire:sub(1, 2), wire:sub(3, 4), wire:sub(5, 9),
                               wire:sub(10, 15), wire:sub(16) }) do
        conn:write(piece)
        srv.sleep(0.05)
      end
      assert.equal(payload, conn:read_frame("u32"))
    end)
  end)

  it("answers nothing until the whole message is there", function()
    session(function(conn)
      conn:write(frame("complete"):sub(1, 7))
      conn:settimeout(0.3)
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { conn:read() })
      conn:settimeout(5)
      conn:write(frame("complete"):sub(8))
      assert.equal("complete", conn:read_frame("u32"))
    end)
  end)

  it("cuts several messages sent in one write apart again", function()
    session(function(conn)
      local payloads = { "first", "", "third has\nnewlines\r\n", ("\0\1\2\255"):rep(100) }
      local wire = {}
      for i, p in ipairs(payloads) do wire[i] = frame(p) end
      conn:write(table.concat(wire))
      for _, p in ipairs(payloads) do
        assert.equal(p, conn:read_frame("u32"))
      end
    end)
  end)

  it("handles a message ending mid-write and the next one starting there", function()
    session(function(conn)
      local wire = frame("one") .. frame("two") .. frame("three")
      conn:write(wire:sub(1, 10))
      srv.sleep(0.05)
      conn:write(wire:sub(11))
      assert.equal("one", conn:read_frame("u32"))
      assert.equal("two", conn:read_frame("u32"))
      assert.equal("three", conn:read_frame("u32"))
    end)
  end)

  it("echoes a message of the largest size it takes (1 MiB) intact", function()
    session(function(conn)
      local parts = {}
      for i = 1, 256 * 1024 do parts[i] = string.pack(">I4", i) end
      local payload = table.concat(parts) -- 1 MiB, no two 4-byte words alike
      conn:write_frame("u32", payload)
      local echoed = conn:read_frame("u32")
      assert.equal(#payload, #echoed)
      assert.is_true(payload == echoed, "the echoed payload differs")
    end)
  end)

  it("drops a connection that announces a message over 1 MiB", function()
    session(function(conn)
      conn:write(string.pack(">I4", 1024 * 1024 + 1), "x")
      assert.same({ nil, "closed", "EOF" }, { conn:read() })
    end)
    -- The server goes on serving.
    session(function(conn)
      conn:write_frame("u32", "still here")
      assert.equal("still here", conn:read_frame("u32"))
    end)
  end)

  it("runs its client mode against the server", function()
    local status, out, err = helper.exec({ helper.path("examples/framing.lua"), "client",
      tostring(server.port), "hello", "two words", "" })
    assert.equal(0, status, err)
    assert.equal("hello\ntwo words\n\n", out)
  end)

  it("sends its default messages when given none", function()
    local status, out, err = helper.exec({ helper.path("examples/framing.lua"), "client",
      tostring(server.port) })
    assert.equal(0, status, err)
    assert.equal("hello\nsticky\npackets\n", out)
  end)

  it("refuses a bad port in client mode", function()
    local status, out, err = helper.exec({ helper.path("examples/framing.lua"), "client", "hello" })
    assert.equal(1, status)
    assert.equal("", out)
    assert.matches("usage: framing.lua client", err, 1, true)
  end)

  -- Last, as it may take the server down: the client is gone by the time the answers go out,
  -- so the server's writes fail (EPIPE); that must end this connection, not the process.
  it("keeps serving after a client hangs up without reading its answers", function()
    srv.run(function()
      for _ = 1, 5 do -- each hang-up races the server's first answer: try a few
        local conn = srv.tcp.connect("127.0.0.1", server.port)
        if not conn then break end -- the server is gone: say so below
        conn:write(frame("x"):rep(200))
        conn:close()
        srv.sleep(0.1)
      end
      if not server:alive() then error("the server died: " .. tostring(server:wait())) end
      local again = assert(srv.tcp.connect("127.0.0.1", server.port))
      again:settimeout(5)
      again:write_frame("u32", "still there")
      assert.equal("still there", again:read_frame("u32"))
      again:close()
    end)
  end)
end)
