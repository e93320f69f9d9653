-- --workers (DESIGN §7): the real binary runs tests/fixtures/workers_app.lua as
-- `luasrv --workers 2 ...`; the spec talks to it over new connections (so that the kernel
-- spreads them over the workers), signals the master and kills workers.
local srv = require "luasrv"
local helper = require "helper"
local H = require "http_helper"

local FIXTURE = helper.path("tests/fixtures/workers_app.lua")
local quote = helper.shell_quote

local count = helper.count

--- GET target on a new connection: the response, or nil and why (never raises).
local function get(port, target, timeout)
  local ok, r = pcall(H.exchange, port, H.get(target, "Connection: close\r\n"),
    { timeout = timeout or 5 })
  if ok then return r end
  return nil, r
end

--- The worker id and pid that answered GET /.
local function who(port)
  local r, err = get(port, "/")
  if not r then return nil, err end
  local id, pid = r.body:match("worker (%d+) of %d+ pid (%d+)")
  return tonumber(id), tonumber(pid), r.body
end

local function start(flags, args, listeners)
  local all = { "--workers", "2" }
  for _, f in ipairs(flags or {}) do all[#all + 1] = f end
  return helper.start(FIXTURE, { flags = all, args = args, listeners = listeners or 3 })
end

local function ended(pid)
  local stat = helper.read_file("/proc/" .. pid .. "/stat")
  if not stat then return true end
  local state = stat:match("^%d+ %b() (%a)")
  return state == nil or state == "Z" or state == "X"
end

--- The pids of the master's workers.
local function children(pid)
  local p = assert(io.popen("env LD_PRELOAD= pgrep -P " .. pid))
  local pids = {}
  for line in p:lines() do pids[#pids + 1] = tonumber(line) end
  p:close()
  return pids
end

--- Runs `clients` tasks that GET / over new connections until stop() says so; returns the
-- counts record { ok, failed, errors } once they are done.
local function load(port, clients, body)
  local rec = { ok = 0, failed = 0, errors = {}, stop = false, tasks = {} }
  for i = 1, clients do
    rec.tasks[i] = H.spawn(function()
      while not rec.stop do
        local r, err = get(port, "/", 5)
        if r and r.status == 200 then
          rec.ok = rec.ok + 1
        else
          rec.failed = rec.failed + 1
          rec.errors[#rec.errors + 1] = tostring(err)
        end
      end
    end)
  end
  function rec.finish()
    rec.stop = true
    H.join(rec.tasks, 20)
  end
  body(rec)
  rec.finish()
  return rec
end

describe("luasrv --workers", function()
  it("serves from every worker, and prints one 'listening on' line per listener", function()
    local s = start()
    finally(function() s:cleanup() end)
    srv.run(function()
      local seen = {}
      for _ = 1, 40 do
        local r = assert(get(s.port, "/"))
        assert.equal(200, r.status)
        local id, n = r.body:match("worker (%d) of (%d)")
        assert.equal("2", n, r.body)
        seen[id] = true
      end
      assert.is_true(seen["1"] and seen["2"], "not both workers answered")
      -- The TCP and the UDP listener answer as well.
      local tcp_port = tonumber(s.urls[2]:match(":(%d+)$"))
      local c = assert(srv.tcp.connect("127.0.0.1", tcp_port, { timeout = 5 }))
      assert.matches("^worker [12]\n$", c:read("a"))
      c:close()
      local udp_port = tonumber(s.urls[3]:match(":(%d+)$"))
      local u = srv.udp.socket({ timeout = 5 })
      assert(u:sendto("hi", "127.0.0.1", udp_port))
      assert.matches("^worker [12]$", (u:recv()))
      u:close()
    end)
    local out = s:stdout()
    assert.equal(3, count(out, "listening on"), out)
    assert.matches("listening on http://127%.0%.0%.1:%d+\n", out)
    assert.matches("listening on tcp://127%.0%.0%.1:%d+\n", out)
    assert.matches("listening on udp://127%.0%.0%.1:%d+\n", out)
    H.assert_clean_stop(s)
  end)

  it("is worker 0 of 1 without --workers", function()
    assert.equal(0, srv.worker.id)
    assert.equal(1, srv.worker.count)
    local s = helper.start(FIXTURE, { listeners = 3 })
    finally(function() s:cleanup() end)
    srv.run(function()
      local r = assert(get(s.port, "/"))
      assert.matches("^v1 worker 0 of 1 pid %d+$", r.body)
    end)
  end)

  it("adds up 10 x 10,000 concurrent srv.shared.incr calls from both workers exactly",
    function()
      local s = start()
      finally(function() s:cleanup() end)
      srv.run(function()
        local recs, ids, extra = {}, {}, 0
        for i = 1, 10 do
          recs[i] = H.spawn(function()
            local r = assert(get(s.port, "/incr?n=10000", 30))
            assert.equal(200, r.status, r.body)
            ids[r.body] = true
          end)
        end
        H.join(recs, 60)
        -- The kernel chose the workers; make sure both took part.
        while not (ids["worker 1"] and ids["worker 2"]) and extra < 30 do
          local r = assert(get(s.port, "/incr?n=10000", 30))
          ids[r.body] = true
          extra = extra + 1
        end
        assert.is_true(ids["worker 1"] and ids["worker 2"], "not both workers counted")
        local r = assert(get(s.port, "/get?k=total"))
        assert.equal(tostring((10 + extra) * 10000), r.body)
      end)
      H.assert_clean_stop(s)
    end)

  it("restarts a worker killed under load; only its requests in flight fail", function()
    local s = start()
    finally(function() s:cleanup() end)
    local victim
    srv.run(function()
      for _ = 1, 200 do
        local id, pid = who(s.port)
        if id == 1 then victim = pid break end
      end
      assert(victim, "worker 1 never answered")
      assert.equal(200, assert(get(s.port, "/incr?n=5")).status)
      srv.sleep(1.1) -- it has served long enough to be restarted at once
      local clients, after = 6, 0
      local rec = load(s.port, clients, function(rec)
        srv.sleep(0.3)
        assert(os.execute("kill -9 " .. victim))
        local before = rec.ok + rec.failed
        srv.sleep(0.8)
        after = rec.ok + rec.failed - before
      end)
      -- Each client has one request in flight at a time: at most that many can have been
      -- on the killed worker.
      assert.is_true(rec.failed <= clients,
        ("%d requests failed (%d clients): %s"):format(rec.failed, clients,
          table.concat(rec.errors, "; ")))
      assert.is_true(after > 20, "few requests after the kill: " .. after)
      local back = H.wait_for(function()
        local id, pid = who(s.port)
        return id == 1 and pid ~= victim
      end, 5)
      assert.is_true(back, "worker 1 did not come back")
      -- srv.shared outlived the worker.
      for _ = 1, 10 do assert.equal("5", assert(get(s.port, "/get?k=total")).body) end
    end)
    local err = s:stderr()
    assert.is_truthy(err:find(("worker 1 (pid %d) was killed by signal 9"):format(victim), 1, true),
      err)
    H.assert_clean_stop(s)
  end)

  it("reloads every worker on SIGHUP under load without a failed request", function()
    local s = start()
    finally(function() s:cleanup() end)
    srv.run(function()
      local rec = load(s.port, 6, function()
        for _ = 1, 3 do
          srv.sleep(0.3)
          assert(os.execute("kill -HUP " .. s.pid))
        end
        srv.sleep(0.3)
      end)
      assert.equal(0, rec.failed, table.concat(rec.errors, "; "))
      assert.is_true(rec.ok > 50, "few requests: " .. rec.ok)
      assert.is_true(H.wait_for(function()
        local err = s:stderr()
        return count(err, "worker 1: reloaded") >= 3 and count(err, "worker 2: reloaded") >= 3
      end, 5), "not every worker reloaded three times:\n" .. s:stderr())
      -- Still the same processes: a reload is not a restart.
      assert.equal(2, #children(s.pid))
    end)
    assert.is_falsy(s:stderr():find("restarting", 1, true), s:stderr())
    H.assert_clean_stop(s)
  end)

  it("on SIGTERM finishes a request in flight, refuses new connections and exits 0", function()
    local s = start()
    finally(function() s:cleanup() end)
    local workers = children(s.pid)
    assert.equal(2, #workers)
    srv.run(function()
      local slow = H.spawn(function()
        local r = assert(get(s.port, "/slow?s=1", 10))
        assert.equal(200, r.status)
        assert.matches("^slow done by worker [12]$", r.body)
      end)
      srv.sleep(0.3)
      assert(os.execute("kill -TERM " .. s.pid))
      srv.sleep(0.2)
      local c, err = srv.tcp.connect("127.0.0.1", s.port, { timeout = 2 })
      assert.is_nil(c, "a new connection was accepted during the stop")
      assert.matches("refused", tostring(err))
      H.join({ slow }, 10)
    end)
    assert.equal(0, s:wait())
    for _, pid in ipairs(workers) do assert.is_true(ended(pid), "worker " .. pid .. " runs on") end
  end)

  it("keeps srv.shared across workers with --shared-size; a full zone evicts and goes on",
    function()
      local s = start({ "--shared-size", "1" })
      finally(function() s:cleanup() end)
      srv.run(function()
        local r = assert(get(s.port, "/fill?n=5000&size=1024"))
        assert.equal(200, r.status, r.body)
        local first = tonumber(r.body)
        assert(first, "the zone never filled up: " .. r.body)
        assert.is_true(first > 500 and first < 1000, r.body)
        assert.equal("nil", assert(get(s.port, "/get?k=fill1")).body)
        assert.equal(("x"):rep(1024), assert(get(s.port, "/get?k=fill" .. first)).body)
        for _ = 1, 10 do -- both workers read the same zone
          assert.equal(("x"):rep(1024), assert(get(s.port, "/get?k=fill" .. (first - 1))).body)
        end
        assert.equal(200, assert(get(s.port, "/incr")).status)
      end)
      H.assert_clean_stop(s)
    end)

  it("restarts a worker that dies while starting after growing delays", function()
    local marker = helper.tmpname(".marker")
    local s = start(nil, { "", marker })
    finally(function()
      s:cleanup()
      os.remove(marker)
    end)
    srv.run(function()
      local victim
      for _ = 1, 200 do
        local id, pid = who(s.port)
        if id == 1 then victim = pid break end
      end
      assert(victim, "worker 1 never answered")
      srv.sleep(1.1)
      helper.write_file(marker, "")
      assert(os.execute("kill -9 " .. victim))
      assert.is_true(H.wait_for(function()
        return s:stderr():find("restarting it in 0.2 s", 1, true) ~= nil
      end, 5), s:stderr())
      -- Worker 2 serves meanwhile.
      for _ = 1, 5 do assert.equal(200, assert(get(s.port, "/")).status) end
      os.remove(marker)
      assert.is_true(H.wait_for(function() return who(s.port) == 1 end, 5),
        "worker 1 did not come back")
    end)
    local err = s:stderr()
    assert.is_truthy(err:find("worker 1 (pid " .. "", 1, true))
    assert.matches("restarting it in 0%.1 s", err)
    assert.matches("failing on purpose", err)
    H.assert_clean_stop(s)
  end)

  it("exits 1 when the workers fail to start", function()
    local marker = helper.tmpname(".marker")
    helper.write_file(marker, "")
    finally(function() os.remove(marker) end)
    local status, out, err = helper.exec({ "--workers", "2", FIXTURE, "", marker })
    assert.equal(1, status, err)
    assert.matches("failing on purpose", err)
    assert.matches("while starting; stopping", err)
    assert.equal("", out)
  end)

  it("never leaves a worker behind a killed master", function()
    local s = start()
    finally(function() s:cleanup() end)
    local workers = children(s.pid)
    assert.equal(2, #workers)
    s:stop("KILL")
    srv.run(function()
      assert.is_true(H.wait_for(function()
        return ended(workers[1]) and ended(workers[2])
      end, 8), "a worker outlived its master")
    end)
  end)

  it("listens on a Unix socket in every worker and removes it at the end", function()
    local path = helper.tmpname(".sock")
    local s = start(nil, { path }, 4)
    finally(function()
      s:cleanup()
      os.remove(path)
    end)
    assert.equal("unix:" .. path, s.urls[4])
    srv.run(function()
      for _ = 1, 10 do
        local c = assert(srv.tcp.connect({ path = path, timeout = 5 }))
        assert.matches("^unix worker [12]\n$", c:read("a"))
        c:close()
      end
    end)
    H.assert_clean_stop(s)
    assert.is_nil(io.open(path), "the socket file is still there")
  end)

  it("--reload reloads every worker on a change and closes a listener the new version drops",
    function()
      local dir = helper.tmpname("-workers")
      assert(os.execute("mkdir -p " .. quote(dir)))
      local script = dir .. "/app.lua"
      local text = assert(helper.read_file(FIXTURE))
      helper.write_file(script, text)
      local s = helper.start(script, { flags = { "--workers", "2", "--reload" }, listeners = 3 })
      finally(function()
        s:cleanup()
        os.execute("rm -rf " .. quote(dir))
      end)
      local tcp_port = tonumber(s.urls[2]:match(":(%d+)$"))
      srv.run(function()
        assert.is_true(H.wait_for(function()
          local seen = {}
          for _ = 1, 20 do seen[who(s.port) or 0] = true end
          return seen[1] and seen[2]
        end, 5), "not both workers started")
        local v2 = text:gsub('local VERSION = "v1"', 'local VERSION = "v2"')
        v2 = v2:gsub("srv%.tcp%.listen%(%{ port = 0 %}.-\nend%)\n", "")
        helper.write_file(script, v2)
        local seen = {}
        assert.is_true(H.wait_for(function()
          local id, _, body = who(s.port)
          if id and body:find("^v2 ") then seen[id] = true end
          return seen[1] and seen[2]
        end, 5), "not every worker serves v2:\n" .. s:stderr())
        assert.is_true(H.wait_for(function()
          local c = srv.tcp.connect("127.0.0.1", tcp_port, { timeout = 1 })
          if c then c:close() end
          return c == nil
        end, 5), "the dropped TCP listener still accepts")
      end)
      assert.equal(3, count(s:stdout(), "listening on"), s:stdout())
      H.assert_clean_stop(s)
    end)
end)

describe("examples/every_core.lua", function()
  it("counts every request once across the workers and names the worker", function()
    local s = helper.start(helper.path("examples/every_core.lua"),
      { flags = { "--workers", "2" }, args = { "0" } })
    finally(function() s:cleanup() end)
    srv.run(function()
      local seen, numbers = {}, {}
      for i = 1, 20 do
        local r = assert(get(s.port, "/"))
        local id, n = r.body:match("^worker (%d) of 2, request (%d+)\n$")
        assert(id, r.body)
        seen[id] = true
        numbers[i] = tonumber(n)
      end
      for i = 1, 20 do assert.equal(i, numbers[i]) end
      assert.is_true(seen["1"] and seen["2"])
    end)
    H.assert_clean_stop(s)
  end)
end)

describe("luasrv --workers usage", function()
  it("takes a number from 1 to 1024 or auto", function()
    for _, bad in ipairs({ "0", "x", "-1", "1025" }) do
      local status, _, err = helper.exec({ "--workers", bad, FIXTURE })
      assert.equal(2, status, bad)
      assert.matches("%-%-workers", err)
    end
  end)
end)
