-- The upload example, run as a user would: `luasrv examples/upload.lua 0 DIR`. Upload through
-- the HTML form's encoding (multipart, several files), see them listed, download them back
-- whole and in ranges.
local srv = require "luasrv"
local H = require "http_helper"
local S = require "static_helper"
local helper = H.helper

describe("examples/upload.lua", function()
  local server, port, dir, url

  setup(function()
    dir = helper.tmpname("-uploads") -- the example makes it
    server = helper.start(helper.path("examples/upload.lua"), { args = { "0", dir } })
    port = server.port
    url = ("http://127.0.0.1:%d"):format(port)
  end)

  teardown(function()
    if server then server:cleanup() end
    os.execute("rm -rf " .. S.q(dir))
  end)

  after_each(function()
    if server.status == nil then
      assert.is_true(server:alive(), "the server died:\n" .. server:stderr())
    end
  end)

  it("shows the form and an empty list", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/"))
      assert.equal(200, r.status)
      assert.truthy(r.body:find('enctype="multipart/form-data"', 1, true))
      assert.truthy(r.body:find("None yet.", 1, true))
    end)
  end)

  it("stores uploads under safe names, lists them and serves them back with ranges", function()
    local src = helper.tmpname("-src")
    S.sh(("head -c 300000 /dev/urandom > %s"):format(S.q(src)))
    local out = S.capture(("curl -s -o /dev/null -w '%%{http_code} %%{redirect_url}' " ..
      "-F 'file=@%s;filename=data.bin' -F 'file=@%s;filename=../evil <name>.txt' -F note=hi %s/upload")
      :format(src, src, url))
    assert.matches("^303 ", out)
    assert.truthy(out:find("saved", 1, true), out)
    local list = S.capture(("curl -s %s/"):format(url))
    assert.truthy(list:find('href="/files/data.bin"', 1, true), list)
    assert.truthy(list:find('href="/files/evil__name_.txt"', 1, true), list)
    assert.truthy(list:find("300000 bytes", 1, true))
    -- downloads: whole, and a range
    local want = S.capture("md5sum < " .. S.q(src)):match("^%x+")
    assert.equal(want, S.capture(("curl -s %s/files/data.bin | md5sum"):format(url)):match("^%x+"))
    local f = assert(io.open(src, "rb"))
    f:seek("set", 1000)
    local part = f:read(100)
    f:close()
    assert.is_true(part == S.capture(("curl -s -r 1000-1099 %s/files/data.bin"):format(url)))
    local head = S.capture(("curl -s -D - -o /dev/null -r 1000-1099 %s/files/data.bin"):format(url))
    assert.truthy(head:find("206 Partial Content", 1, true))
    assert.truthy(head:find("Content-Range: bytes 1000-1099/300000", 1, true))
    assert.truthy(head:find("Content-Disposition: attachment", 1, true))
    -- the same name again is stored next to the first
    S.capture(("curl -s -o /dev/null -F 'file=@%s;filename=data.bin' %s/upload"):format(src, url))
    assert.truthy(S.capture(("curl -s %s/"):format(url)):find('href="/files/data-2.bin"', 1, true))
    os.remove(src)
  end)

  it("does not serve anything outside its directory", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/files/../../etc/passwd"))
      assert.equal(404, r.status)
      assert.falsy(r.body:find("root:", 1, true))
    end)
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)
