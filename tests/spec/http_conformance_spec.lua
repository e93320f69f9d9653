-- The HTTP/1.1 conformance table (tests/spec/conformance_cases.lua, shown in
-- docs/conformance.md): each case's raw bytes against tests/fixtures/conformance_app.lua, the
-- statuses and the connection's fate checked against what the RFC (or the project, where the
-- RFC leaves a choice) wants. nginx's recorded answers are in the table for comparison; they
-- are not checked here.
local srv = require "luasrv"
local H = require "http_helper"
local cases = require "conformance_cases"
local run = require "conformance_run"

describe("HTTP conformance table", function()
  local port
  local life = H.serve("conformance_app.lua", function(s) port = s.port end)
  setup(life.setup)
  teardown(life.teardown)
  after_each(life.check)

  for i, case in ipairs(cases) do
    it(("%d. %s (RFC %s)"):format(i, case.name, case.rfc), function()
      local r = srv.run(function() return run(port, case) end)
      local what = ("%s\nreceived: %q"):format(case.name, r.raw:sub(1, 400))
      assert.same(case.want, r.statuses, what)
      if case.close ~= nil then
        assert.equal(case.close, r.closed, (case.close and "expected a close: " or
          "expected the connection to stay open: ") .. what)
      end
      if case.body then assert.matches(case.body, r.raw, 1, false, what) end
      if case.head then assert.falsy(r.raw:find("\r\n\r\nok", 1, true), "a body after HEAD: " .. what) end
    end)
  end
end)
