-- examples/router.lua as a user runs it: pages, the login form (decoded as a browser sends
-- it) and a route with a parameter. Talked to with curl.
local helper = require "helper"

describe("examples/router.lua", function()
  local server, url

  setup(function()
    server = helper.start(helper.path("examples/router.lua"), { args = { "0" } })
    url = server.url
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("decodes the login form: John+Smith is John Smith", function()
    local out = helper.capture(("curl -s -d 'user=John+Smith&password=x%%21' %s/login"):format(url))
    assert.truthy(out:find("Hello, John Smith!", 1, true), out)
    out = helper.capture(("curl -s -o /dev/null -w '%%{http_code}' -d 'user=' %s/login"):format(url))
    assert.equal("400", out)
  end)

  it("answers a route with a parameter as JSON", function()
    local out = helper.capture(("curl -s %s/users/7"):format(url))
    assert.equal("7", require("cjson").decode(out).id)
  end)
end)
