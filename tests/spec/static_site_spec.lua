-- The static site example, run as a user would: `luasrv examples/static_site.lua 0` serving
-- examples/public/ (index page, stylesheet, custom 404 page).
local srv = require "luasrv"
local H = require "http_helper"
local helper = H.helper

describe("examples/static_site.lua", function()
  local server, port

  setup(function()
    server = helper.start(helper.path("examples/static_site.lua"), { args = { "0" } })
    port = server.port
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  after_each(function()
    if server.status == nil then
      assert.is_true(server:alive(), "the server died:\n" .. server:stderr())
    end
  end)

  it("serves the index page, which links the stylesheet", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/"))
      assert.equal(200, r.status)
      assert.equal("text/html; charset=utf-8", r.headers["content-type"])
      assert.equal(helper.read_file(helper.path("examples/public/index.html")), r.body)
      assert.truthy(r.body:find('href="style.css"', 1, true))
      assert.equal("max-age=60", r.headers["cache-control"])
    end)
  end)

  it("serves the stylesheet with validators, and 304 when it has not changed", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/style.css"))
      assert.equal(200, r.status)
      assert.equal("text/css; charset=utf-8", r.headers["content-type"])
      assert.equal(helper.read_file(helper.path("examples/public/style.css")), r.body)
      local again = H.exchange(port, H.get("/style.css", "If-None-Match: " .. r.headers["etag"] .. "\r\n"))
      assert.equal(304, again.status)
      assert.equal("", again.body)
    end)
  end)

  it("answers a missing page with the custom 404 page", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/missing"))
      assert.equal(404, r.status)
      assert.equal(helper.read_file(helper.path("examples/public/404.html")), r.body)
      r = H.exchange(port, H.get("/../static_site.lua"))
      assert.equal(404, r.status)
      assert.falsy(r.body:find("srv.http.listen", 1, true))
    end)
  end)

  it("lets its route win", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/health"))
      assert.equal(200, r.status)
      assert.equal('{"ok":true}', r.body)
    end)
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)
