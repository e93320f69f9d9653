-- The access log is buffered and written once per loop turn: every line of a request that was
-- answered reaches stdout, also when the process stops gracefully right after (SIGTERM,
-- SIGINT), with --workers too, and a line shows up without waiting for more traffic.
local srv = require "luasrv"
local H = require "http_helper"

local function count_lines(text, needle)
  local n = 0
  for line in text:gmatch("[^\n]+") do
    if line:find(needle, 1, true) then n = n + 1 end
  end
  return n
end

-- Sends `total` requests to /ok?n=<i> over `conns` connections, 50 pipelined per write, and
-- reads every answer.
local function load(port, total, conns)
  local tasks = {}
  for k = 1, conns do
    tasks[k] = H.spawn(function()
      local c = H.connect(port)
      local i = k
      while i <= total do
        local batch, n = {}, 0
        while i <= total and n < 50 do
          n = n + 1
          batch[n] = H.get("/ok?n=" .. i)
          i = i + conns
        end
        c:send(table.concat(batch))
        for _ = 1, n do assert(c:must_response().status == 200) end
      end
      c:close()
    end)
  end
  H.join(tasks)
end

describe("access log", function()
  for _, case in ipairs({ { "SIGTERM", "TERM", {} }, { "SIGINT", "INT", {} },
                          { "SIGTERM with --workers 2", "TERM", { "--workers", "2" } } }) do
    local name, sig, flags = case[1], case[2], case[3]
    it("has a line for each of 3000 answered requests after a stop by " .. name, function()
      local server = H.start("http_errors.lua", { flags = flags })
      local ok, err = pcall(function()
        srv.run(function() load(server.port, 3000, 6) end)
        assert.equal(0, server:stop(sig))
        local out = server:stdout()
        assert.equal(3000, count_lines(out, '"GET /ok?n='), "lines in the log:\n" .. out:sub(1, 2000))
        for i = 1, 3000, 499 do
          assert.equal(1, count_lines(out, '"GET /ok?n=' .. i .. ' HTTP/1.1" 200 '), "request " .. i)
        end
      end)
      server:cleanup()
      assert(ok, err)
    end)
  end

  it("writes a request's line without waiting for more requests or the stop", function()
    local server = H.start("http_errors.lua")
    local ok, err = pcall(function()
      srv.run(function()
        local r = H.exchange(server.port, H.get("/ok?single=1"))
        assert.equal(200, r.status)
        assert.is_true(H.wait_for(function()
          return server:stdout():find("/ok?single=1", 1, true) ~= nil
        end, 5), "no line for the request while the server runs")
      end)
    end)
    server:cleanup()
    assert(ok, err)
  end)
end)
