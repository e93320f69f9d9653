-- Large files through app:static: a 100 MB file arrives intact (whole, in ranges, to several
-- clients at once) while the server's memory stays flat; a client that reads slowly or goes
-- away costs nothing lasting (no memory, no descriptors), and the server goes on.
local srv = require "luasrv"
local H = require "http_helper"
local S = require "static_helper"

local SIZE = 100 * 1024 * 1024
-- Peak resident memory may grow this much while serving (buffers are 64 KiB a connection).
local RSS_SLACK_KIB = 24 * 1024

describe("static large files", function()
  local server, port, root, big, big_md5

  setup(function()
    server, port, root = S.start()
    big = root .. "/site/big.bin"
    S.sh(("head -c %d /dev/urandom > %s"):format(SIZE, S.q(big)))
    big_md5 = S.capture("md5sum < " .. S.q(big)):match("^(%x+)")
  end)

  teardown(function()
    if server then server:cleanup() end
    S.remove_tree(root)
  end)

  after_each(function()
    if server.status == nil then
      assert.is_true(server:alive(), "the server died:\n" .. server:stderr())
    end
  end)

  local function url(path) return ("http://127.0.0.1:%d%s"):format(port, path) end

  -- Warms the server up (every code path allocated once), then returns its peak RSS.
  local function baseline()
    S.capture(("curl -s -o /dev/null %s %s"):format(url("/style.css"), url("/data.bin")))
    return assert(S.proc_kib(server.pid, "VmHWM"))
  end

  it("serves 100 MB intact with flat memory", function()
    local before = baseline()
    local out = S.capture(("curl -s %s | md5sum"):format(url("/big.bin")))
    assert.equal(big_md5, out:match("^(%x+)"), "the content differs")
    local after = assert(S.proc_kib(server.pid, "VmHWM"))
    assert.is_true(after - before < RSS_SLACK_KIB,
      ("peak RSS grew by %d KiB serving 100 MB"):format(after - before))
  end)

  it("serves ranges of it, including the end", function()
    local f = assert(io.open(big, "rb"))
    local function expect(first, last)
      f:seek("set", first)
      local want = f:read(last - first + 1)
      local got = S.capture(("curl -s -r %d-%d %s"):format(first, last, url("/big.bin")))
      assert.equal(#want, #got)
      assert.is_true(want == got, ("range %d-%d differs"):format(first, last))
    end
    expect(0, 99)
    expect(50 * 1024 * 1024 - 7, 50 * 1024 * 1024 + 70000)
    expect(SIZE - 1000, SIZE - 1)
    expect(12345, 12345 + 3 * 1024 * 1024) -- a large range: sent in pieces like a file
    f:close()
  end)

  it("answers HEAD with the size and no body", function()
    srv.run(function()
      local r = H.exchange(port, H.req("HEAD", "/big.bin"), { head = true })
      assert.equal(200, r.status)
      assert.equal(tostring(SIZE), r.headers["content-length"])
      assert.equal("application/octet-stream", r.headers["content-type"])
    end)
  end)

  it("serves several clients at once", function()
    local before = baseline()
    local outs = {}
    for i = 1, 3 do outs[i] = S.q(root .. "/dl" .. i) end
    local cmd = {}
    for i = 1, 3 do cmd[i] = ("curl -s -o %s %s &"):format(outs[i], url("/big.bin")) end
    S.sh(table.concat(cmd, " ") .. " wait")
    for i = 1, 3 do
      assert.equal(big_md5, S.capture("md5sum < " .. outs[i]):match("^(%x+)"), "download " .. i)
      os.remove(root .. "/dl" .. i)
    end
    local after = assert(S.proc_kib(server.pid, "VmHWM"))
    assert.is_true(after - before < RSS_SLACK_KIB,
      ("peak RSS grew by %d KiB serving three downloads"):format(after - before))
  end)

  it("holds nothing for a slow client, and lets go of one that leaves", function()
    local before = baseline()
    S.capture("curl -s -I " .. url("/big.bin")) -- in the open file cache, like the rest
    local fds = S.fd_count(server.pid)
    srv.run(function()
      local c = H.connect(port, 10)
      c:send(H.get("/big.bin"))
      local r = c:head()
      assert.equal(200, r.status)
      -- Read a little, then nothing for a while: the server must wait, not buffer the file.
      local got = 0
      while got < 1024 * 1024 do
        assert(c:fill())
        got = got + #c.buf
        c.buf = ""
      end
      srv.sleep(1)
      local mid = assert(S.proc_kib(server.pid, "VmHWM"))
      assert.is_true(mid - before < RSS_SLACK_KIB,
        ("peak RSS grew by %d KiB for a client that stopped reading"):format(mid - before))
      c:close() -- and leave in the middle
      -- The server notices, and serves the next client as usual.
      srv.sleep(0.2)
      local r2 = H.exchange(port, H.get("/data.bin"))
      assert.equal(200, r2.status)
      assert.equal(S.DATA, r2.body)
    end)
    -- No descriptor is left behind (the file's own, or the connection's).
    local deadline = os.time() + 5
    while S.fd_count(server.pid) > fds and os.time() < deadline do os.execute("sleep 0.1") end
    assert.equal(fds, S.fd_count(server.pid))
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)
