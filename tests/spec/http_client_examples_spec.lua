-- The client examples run as `luasrv examples/<name>.lua ...` processes against a luasrv
-- server process started by the spec (a script written here): http_get, http_post,
-- http_options, and proxy.lua in front of it.
local helper = require "helper"

local upstream_src = [[
local srv = require "luasrv"
local app = srv.http.app()
app:get("/", function(_, res)
  res:header("Set-Cookie", "a=1"):header("Set-Cookie", "b=2")
  return "hello from upstream"
end)
app:get("/chunked", function(_, res) res:write("one,") res:write("two") end)
app:get("/moved", function(_, res) res:status(301):header("Location", "/"):send("") end)
app:post("/echo", function(req) return req.method .. " " .. (req.headers["content-type"] or "-")
  .. " " .. (req.headers["transfer-encoding"] or "length") .. " " .. req:body() end)
app:get("/big", function() return string.rep("0123456789abcdef", 131072) end)
app:get("/who", function(req) return (req.headers["x-forwarded-for"] or "-") .. " " .. req.headers.host end)
srv.http.listen({ port = 0 }, app)
]]

describe("client examples", function()
  local upstream, script
  setup(function()
    script = helper.tmpname(".lua")
    helper.write_file(script, upstream_src)
    upstream = helper.start(script)
  end)
  teardown(function()
    upstream:cleanup()
    os.remove(script)
  end)

  it("http_get.lua prints the head and saves the body", function()
    local file = helper.tmpname(".body")
    local status, out, err = helper.exec({ helper.path("examples/http_get.lua"),
      upstream.url .. "/", file })
    assert.equal(0, status, err)
    assert.matches("^HTTP/1%.1 200 OK\n", out)
    assert.matches("\nset%-cookie: a=1\nset%-cookie: b=2\n", out)
    assert.matches("body: 19 bytes saved to", out, 1, true)
    assert.equal("hello from upstream", helper.read_file(file))
    os.remove(file)
    -- Redirects are followed, chunked bodies decoded.
    status, out = helper.exec({ helper.path("examples/http_get.lua"), upstream.url .. "/moved" })
    assert.equal(0, status)
    assert.matches("body: 19 bytes\n$", out)
    status = helper.exec({ helper.path("examples/http_get.lua"), upstream.url .. "/chunked", file })
    assert.equal(0, status)
    assert.equal("one,two", helper.read_file(file))
    os.remove(file)
    local _
    status, _, err = helper.exec({ helper.path("examples/http_get.lua"), "http://127.0.0.1:1/" })
    assert.equal(1, status)
    assert.matches("http_get: connection refused", err, 1, true)
  end)

  it("http_post.lua posts data, or standard input chunked", function()
    local status, out, err = helper.exec({ helper.path("examples/http_post.lua"),
      upstream.url .. "/echo", "name=luasrv" })
    assert.equal(0, status, err)
    assert.equal("200 OK\nPOST application/x-www-form-urlencoded length name=luasrv\n", out)
    status, out = helper.exec({ helper.path("examples/http_post.lua"), upstream.url .. "/echo", "-" },
      "from stdin\n")
    assert.equal(0, status)
    assert.equal("200 OK\nPOST application/x-www-form-urlencoded chunked from stdin\n", out)
  end)

  it("http_options.lua prints Allow", function()
    local status, out, err = helper.exec({ helper.path("examples/http_options.lua"),
      upstream.url .. "/echo" })
    assert.equal(0, status, err)
    assert.equal("204 No Content\nAllow: OPTIONS, POST\n", out)
  end)

  it("proxy.lua forwards to the upstream and back", function()
    local proxy = helper.start(helper.path("examples/proxy.lua"), { args = { upstream.url, "0" } })
    local ok, e = pcall(function()
      local status, out, err = helper.exec({ helper.path("examples/http_get.lua"), proxy.url .. "/" })
      assert.equal(0, status, err)
      assert.matches("\nset%-cookie: a=1\nset%-cookie: b=2\n", out)
      assert.equal(1, helper.count(out, "\nserver: "))
      status, out = helper.exec({ helper.path("examples/http_post.lua"), proxy.url .. "/echo", "x=1" })
      assert.equal(0, status)
      assert.equal("200 OK\nPOST application/x-www-form-urlencoded length x=1\n", out)
      local file = helper.tmpname(".body")
      status = helper.exec({ helper.path("examples/http_get.lua"), proxy.url .. "/who", file })
      assert.equal(0, status)
      assert.equal("127.0.0.1 " .. upstream.url:match("//(.*)"), helper.read_file(file))
      -- Streamed through: unsized (chunked) and over 1 MiB.
      status = helper.exec({ helper.path("examples/http_get.lua"), proxy.url .. "/chunked", file })
      assert.equal(0, status)
      assert.equal("one,two", helper.read_file(file))
      status = helper.exec({ helper.path("examples/http_get.lua"), proxy.url .. "/big", file })
      assert.equal(0, status)
      assert.equal(string.rep("0123456789abcdef", 131072), helper.read_file(file))
      os.remove(file)
      status, out = helper.exec({ helper.path("examples/http_get.lua"), proxy.url .. "/missing" })
      assert.equal(0, status)
      assert.matches("^HTTP/1%.1 404", out)
    end)
    local bad = helper.start(helper.path("examples/proxy.lua"), { args = { "http://127.0.0.1:1", "0" } })
    local status, out = helper.exec({ helper.path("examples/http_get.lua"), bad.url .. "/" })
    bad:cleanup()
    proxy:cleanup()
    assert(ok, e)
    assert.equal(0, status)
    assert.matches("^HTTP/1%.1 502", out)
  end)
end)
