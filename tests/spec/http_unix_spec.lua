-- HTTP over a Unix-domain socket: srv.http.listen{ path = ... }, tried with curl
-- --unix-socket and with luasrv's own client; the socket file goes when the server stops.
local srv = require "luasrv"
local helper = require "helper"
local H = require "http_helper"

describe("HTTP on a Unix-domain socket", function()
  local server, path

  setup(function()
    path = helper.tmpname(".sock")
    server = H.start("http_unix.lua", { args = { path } })
  end)

  teardown(function()
    if server then server:cleanup() end
    os.remove(path)
  end)

  it("announces the path and answers curl --unix-socket", function()
    assert.equal("unix:" .. path, server.url)
    local out = helper.capture(("curl -s --unix-socket %s http://localhost/"):format(helper.shell_quote(path)))
    assert.equal("peer=unix scheme=http", out)
    out = helper.capture(("curl -s --unix-socket %s -d 'posted body' http://localhost/echo")
      :format(helper.shell_quote(path)))
    assert.equal("posted body", out)
  end)

  it("keeps connections alive and pipelines like TCP", function()
    srv.run(function()
      local conn = assert(srv.tcp.connect({ path = path, timeout = 5 }))
      conn:write(H.get("/") .. H.get("/"))
      local text = ""
      while select(2, text:gsub("peer=unix", "")) < 2 do
        local data = assert(conn:read())
        text = text .. data
      end
      assert.equal(2, select(2, text:gsub("HTTP/1.1 200 OK", "")))
      conn:close()
    end)
  end)

  it("removes the socket file when it stops", function()
    H.assert_clean_stop(server, 10)
    assert.is_nil(io.open(path, "r"))
  end)
end)
