-- Failing HTTP handlers and the logs (tests/fixtures/http_errors.lua): error() is a 500 with
-- the traceback on stderr, the server goes on, --dev shows the traceback on the page; the
-- access log in combined format, --log-format json, and --quiet.
local srv = require "luasrv"
local cjson = require "cjson"
local H = require "http_helper"

local fixture = H.fixture("http_errors.lua")

local function line(tag) return H.line_of(fixture, tag) end

describe("http errors", function()
  local server, port
  local life = H.serve("http_errors.lua", function(s) server, port = s, s.port end)
  setup(life.setup)
  teardown(life.teardown)
  after_each(life.check)

  it("answers 500 with a plain page and logs file:line and the traceback", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/boom"))
      assert.equal(500, r.status)
      assert.matches("%S", r.body)
      assert.is_nil(r.body:find("traceback", 1, true), "the traceback leaked: " .. r.body)
      assert.is_nil(r.body:find("http_errors.lua", 1, true), "the file name leaked: " .. r.body)
      assert.is_nil(r.body:find("kaboom", 1, true), "the error message leaked: " .. r.body)
      local where = "http_errors.lua:" .. line("FAIL_BOOM") .. ":"
      local err = H.wait_output(server, "stderr", where)
      assert.truthy(err:find(where .. " kaboom from the handler", 1, true), err)
      assert.truthy(err:find("stack traceback", 1, true), err)
    end)
  end)

  it("logs every frame of the traceback for an error in a helper function", function()
    srv.run(function()
      assert.equal(500, H.exchange(port, H.get("/deep")).status)
      local err = H.wait_output(server, "stderr", "deep failure in a helper")
      assert.truthy(err:find("http_errors.lua:" .. line("FAIL_DEEP") .. ":", 1, true), err)
      assert.truthy(err:find("http_errors.lua:" .. line("CALL_DEEP") .. ":", 1, true), err)
    end)
  end)

  it("answers 500 for an error after a yield, a non-string error and a runtime error", function()
    srv.run(function()
      assert.equal(500, H.exchange(port, H.get("/after-sleep")).status)
      assert.equal(500, H.exchange(port, H.get("/table-error")).status)
      assert.equal(500, H.exchange(port, H.get("/nil-call")).status)
      local err = H.wait_output(server, "stderr", "http_errors.lua:" .. line("FAIL_NIL") .. ":")
      assert.truthy(err:find("http_errors.lua:" .. line("FAIL_SLEEP") .. ": failed after a sleep",
        1, true), err)
      assert.truthy(err:find("http_errors.lua:" .. line("FAIL_NIL") .. ":", 1, true), err)
    end)
  end)

  it("goes on serving after many failures", function()
    srv.run(function()
      for _ = 1, 20 do
        assert.equal(500, H.exchange(port, H.get("/boom")).status)
      end
      local r = H.exchange(port, H.get("/ok"))
      assert.equal(200, r.status)
      assert.equal("ok", r.body)
    end)
  end)

  it("writes a combined-format access log line on stdout", function()
    srv.run(function()
      H.exchange(port, H.get("/ok?x=1", "User-Agent: spec-agent/1.0\r\nReferer: http://ref.example/\r\n"))
      H.exchange(port, H.get("/not-found"))
      H.exchange(port, H.get("/boom"))
    end)
    local out = H.wait_output(server, "stdout", "/boom")
    local pattern = '^127%.0%.0%.1 %- %- %[%d%d/%a%a%a/%d%d%d%d:%d%d:%d%d:%d%d [%+%-]%d%d%d%d%] '
      .. '"GET /ok%?x=1 HTTP/1%.1" 200 2 "http://ref%.example/" "spec%-agent/1%.0"$'
    local found = {}
    for l in out:gmatch("[^\n]+") do
      if l:match(pattern) then found.ok = true end
      if l:match('"GET /not%-found HTTP/1%.1" 404 %d+ "%-" "%-"$') then found.nf = true end
      if l:match('"GET /boom HTTP/1%.1" 500 ') then found.boom = true end
    end
    assert.is_true(found.ok, "no combined log line for /ok?x=1 in:\n" .. out)
    assert.is_true(found.nf, "no log line for the 404 in:\n" .. out)
    assert.is_true(found.boom, "no log line for the 500 in:\n" .. out)
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)

describe("http errors with --dev", function()
  local server

  setup(function()
    server = H.start("http_errors.lua", { flags = { "--dev" } })
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("shows the traceback on the 500 page", function()
    srv.run(function()
      local r = H.exchange(server.port, H.get("/boom"))
      assert.equal(500, r.status)
      assert.truthy(r.body:find("stack traceback", 1, true), r.body)
      assert.truthy(r.body:find("http_errors.lua:" .. line("FAIL_BOOM") .. ":", 1, true), r.body)
      assert.truthy(r.body:find("kaboom from the handler", 1, true), r.body)
    end)
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)

describe("http access log with --log-format json", function()
  local server

  setup(function()
    server = H.start("http_errors.lua", { flags = { "--log-format", "json" } })
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("writes one JSON object per request", function()
    srv.run(function()
      H.exchange(server.port,
        H.get("/ok?x=1", "User-Agent: spec-agent/1.0\r\nReferer: http://ref.example/\r\n"))
    end)
    local out = H.wait_output(server, "stdout", "spec-agent")
    local entry
    for l in out:gmatch("[^\n]+") do
      if l:find("spec-agent", 1, true) then
        local ok, v = pcall(cjson.decode, l)
        assert.is_true(ok, "not JSON: " .. l)
        entry = v
      end
    end
    assert.is_table(entry, "no JSON access log line in:\n" .. out)
    local values = {}
    for _, v in pairs(entry) do
      values[#values + 1] = tostring(type(v) == "number" and math.tointeger(v) or v)
    end
    local all = "\n" .. table.concat(values, "\n") .. "\n"
    assert.truthy(all:find("\nGET\n", 1, true), "no method in " .. out)
    assert.truthy(all:find("\n200\n", 1, true), "no status in " .. out)
    assert.truthy(all:find("/ok?x=1", 1, true), "no target in " .. out)
    assert.truthy(all:find("\n127.0.0.1\n", 1, true), "no client address in " .. out)
    assert.truthy(all:find("\nspec-agent/1.0\n", 1, true), "no user agent in " .. out)
    assert.truthy(all:find("\nhttp://ref.example/\n", 1, true), "no referer in " .. out)
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)

describe("http with --quiet", function()
  local server

  setup(function()
    server = H.start("http_errors.lua", { flags = { "--quiet" } })
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("writes no access log but still logs handler errors", function()
    srv.run(function()
      assert.equal(200, H.exchange(server.port, H.get("/ok?x=1")).status)
      assert.equal(500, H.exchange(server.port, H.get("/boom")).status)
    end)
    local err = H.wait_output(server, "stderr", "kaboom")
    -- SIGTERM ends the server gracefully, so whatever stdout held is flushed.
    H.assert_clean_stop(server)
    local out = server:stdout()
    assert.is_nil(out:find("/ok", 1, true), "an access log line with --quiet:\n" .. out)
    assert.is_nil(out:find("/boom", 1, true), "an access log line with --quiet:\n" .. out)
    assert.truthy(out:find("listening on", 1, true), out)
    assert.truthy(err:find("kaboom from the handler", 1, true), err)
  end)
end)
