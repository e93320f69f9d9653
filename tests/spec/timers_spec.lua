-- Conformance: srv.after, srv.every, timer:cancel, srv.sleep, srv.now and srv.monotime.
local srv = require "luasrv"
local C = require "conformance"

local wait_until = C.wait_until

describe("timers", function()
  it("fire after() callbacks in delay order, whatever the order they were set in", function()
    local order = srv.run(function()
      local order = {}
      srv.after(0.06, function() order[#order + 1] = "d60" end)
      srv.after(0.02, function() order[#order + 1] = "d20" end)
      srv.after(0, function() order[#order + 1] = "d0" end)
      srv.after(0.04, function() order[#order + 1] = "d40" end)
      srv.after(0.001, function() order[#order + 1] = "d1" end)
      wait_until(function() return #order == 5 end, 5, "the timers")
      return order
    end)
    assert.same({ "d0", "d1", "d20", "d40", "d60" }, order)
  end)

  it("fire timers with equal delays in the order they were set", function()
    local order = srv.run(function()
      local order = {}
      for i = 1, 10 do
        srv.after(0.01, function() order[#order + 1] = i end)
      end
      wait_until(function() return #order == 10 end, 5, "the timers")
      return order
    end)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, order)
  end)

  it("run an after(0) callback only once the current task yields", function()
    srv.run(function()
      local ran = false
      srv.after(0, function() ran = true end)
      assert.is_false(ran)
      srv.sleep(0)
      wait_until(function() return ran end, 5, "the after(0) callback")
    end)
  end)

  it("wake sleeping tasks in order of their wake-up time", function()
    local order = srv.run(function()
      local order = {}
      for _, d in ipairs({ 0.05, 0.01, 0.03, 0.02, 0.04 }) do
        C.spawn(function()
          srv.sleep(d)
          order[#order + 1] = d
        end)
      end
      wait_until(function() return #order == 5 end, 5, "the sleepers")
      return order
    end)
    assert.same({ 0.01, 0.02, 0.03, 0.04, 0.05 }, order)
  end)

  it("let other tasks run while one sleeps", function()
    srv.run(function()
      local ticks = 0
      local t = srv.every(0.005, function() ticks = ticks + 1 end)
      srv.sleep(0.1)
      t:cancel()
      assert.is_true(ticks >= 3, "only " .. ticks .. " ticks during a 0.1 s sleep")
    end)
  end)

  it("sleep lasts at least as long as asked", function()
    srv.run(function()
      srv.sleep(0) -- one turn of the loop first (see "timers after synchronous work" below)
      local t0, w0 = srv.monotime(), srv.now()
      srv.sleep(0.05)
      local dt, dw = srv.monotime() - t0, srv.now() - w0
      assert.is_true(dt >= 0.049 and dt < 5, "monotime advanced " .. dt)
      assert.is_true(dw >= 0.04 and dw < 5, "now advanced " .. dw)
    end)
  end)

  it("every() repeats until cancel(); cancel() answers true once, then false", function()
    srv.run(function()
      local count, cancelled = 0, nil
      local t
      t = srv.every(0.01, function()
        count = count + 1
        if count == 3 then cancelled = t:cancel() end
      end)
      assert.matches("luasrv.Timer %(armed%)", tostring(t))
      wait_until(function() return count >= 3 end, 5, "three runs")
      srv.sleep(0.08)
      assert.equal(3, count)
      assert.is_true(cancelled)
      assert.is_false(t:cancel())
      assert.matches("luasrv.Timer %(done%)", tostring(t))
    end)
  end)

  it("every() counts from the start of each call, so slow calls overlap", function()
    srv.run(function()
      local running, most, calls = 0, 0, 0
      local t = srv.every(0.02, function()
        calls = calls + 1
        running = running + 1
        if running > most then most = running end
        srv.sleep(0.07)
        running = running - 1
      end)
      wait_until(function() return calls >= 5 end, 5, "five calls")
      t:cancel()
      wait_until(function() return running == 0 end, 5, "the calls to end")
      assert.is_true(most >= 2, "calls never overlapped (at most " .. most .. " at once)")
    end)
  end)

  it("a cancelled after() never fires; a fired one cancels to false", function()
    srv.run(function()
      local fired = false
      local t = srv.after(0.02, function() fired = true end)
      assert.is_true(t:cancel())
      local t2_fired = false
      local t2 = srv.after(0, function() t2_fired = true end)
      srv.sleep(0.06)
      assert.is_false(fired)
      assert.is_true(t2_fired)
      assert.is_false(t2:cancel())
    end)
  end)

  it("timer callbacks run as tasks: they may sleep and start other timers", function()
    srv.run(function()
      local steps = {}
      srv.after(0, function()
        steps[#steps + 1] = "start"
        srv.sleep(0.01)
        steps[#steps + 1] = "slept"
        srv.after(0.01, function() steps[#steps + 1] = "nested" end)
      end)
      wait_until(function() return #steps == 3 end, 5, "the callback chain")
      assert.same({ "start", "slept", "nested" }, steps)
    end)
  end)

  it("refuse bad arguments", function()
    local function raises(pattern, fn)
      local ok, err = pcall(fn)
      assert.is_false(ok, "expected an error matching " .. pattern)
      assert.matches(pattern, tostring(err))
    end
    srv.run(function()
      raises("bad argument #1 to 'every' %(interval must be positive%)",
        function() return srv.every(0, function() end) end)
      raises("bad argument #1 to 'after'", function() return srv.after(-1, function() end) end)
      raises("bad argument #1 to 'after'", function() return srv.after(0 / 0, function() end) end)
      raises("bad argument #2 to 'after'", function() return srv.after(0.1) end)
      raises("bad argument #2 to 'every'", function() return srv.every(0.1, "fn") end)
      raises("bad argument #1 to 'sleep'", function() return srv.sleep(-1) end)
      raises("bad argument #1 to 'sleep'", function() return srv.sleep("soon") end)
      raises("expected a non%-negative number of seconds", function() return srv.sleep(math.huge) end)
      raises("expected a non%-negative number of seconds", function() return srv.sleep(0 / 0) end)
    end)
    raises("must be called from a luasrv task", function() return srv.sleep(0.01) end)
  end)
end)

describe("clocks", function()
  it("now() is the wall clock in seconds, with sub-second precision", function()
    local now = srv.now()
    assert.equal("number", type(now))
    assert.is_true(math.abs(now - os.time()) < 2, ("now() %f vs os.time() %d"):format(now, os.time()))
    local fractional = false
    srv.run(function()
      for _ = 1, 20 do
        local t = srv.now()
        if t ~= math.floor(t) then fractional = true break end
        srv.sleep(0.001)
      end
    end)
    assert.is_true(fractional, "now() never had a fractional part")
  end)

  it("monotime() never goes backwards and advances", function()
    local last = srv.monotime()
    assert.equal("number", type(last))
    for _ = 1, 10000 do
      local t = srv.monotime()
      assert(t >= last, "monotime went backwards")
      last = t
    end
    local t0, c0 = srv.monotime(), os.clock()
    while os.clock() - c0 < 0.03 do end -- 30 ms of CPU take at least 30 ms
    assert.is_true(srv.monotime() - t0 >= 0.029)
  end)
end)

-- Lua code runs while the loop waits; a timer set afterwards must count from the moment it is
-- set, not from when the loop last looked at the clock.
describe("timers after synchronous work", function()
  local function busy(seconds)
    -- Wall time, not CPU time: on a loaded machine CPU seconds take longer than seconds.
    local c0 = srv.monotime()
    while srv.monotime() - c0 < seconds do end
  end

  it("sleep() in a new srv.run lasts as long as asked", function()
    srv.run(function() srv.sleep(0) end)
    busy(0.3)
    local t0 = srv.monotime()
    srv.run(function() srv.sleep(0.2) end)
    local elapsed = srv.monotime() - t0
    assert.is_true(elapsed >= 0.19, ("srv.sleep(0.2) returned after %.3f s"):format(elapsed))
  end)

  it("sleep() after a task computed for a while lasts as long as asked", function()
    local elapsed = srv.run(function()
      srv.sleep(0)
      busy(0.3)
      local t0 = srv.monotime()
      srv.sleep(0.2)
      return srv.monotime() - t0
    end)
    assert.is_true(elapsed >= 0.19, ("srv.sleep(0.2) returned after %.3f s"):format(elapsed))
  end)

  it("after() set before a long computation fires once due, not a delay later", function()
    local fired_after = srv.run(function()
      srv.sleep(0)
      local t0, fired = srv.monotime(), nil
      srv.after(0.2, function() fired = srv.monotime() - t0 end)
      busy(0.4) -- the timer is due while this runs
      C.wait_until(function() return fired ~= nil end, 5, "the timer")
      return fired
    end)
    assert.is_true(fired_after >= 0.19, ("fired after %.3f s"):format(fired_after))
    assert.is_true(fired_after < 0.55, ("after(0.2) fired %.3f s after it was set, though it " ..
      "was due while the task computed until 0.4 s"):format(fired_after))
  end)

  it("in the luasrv binary, an after() that fell due during a computation fires when it ends", function()
    local status, out, err = C.exec({ C.fixture("conf_timer_late.lua") }, 20)
    assert.equal(0, status, err)
    local fired = tonumber(out:match("fired ([%d.]+)"))
    assert(fired, "no report: " .. out .. err)
    assert.is_true(fired >= 0.79, ("fired after %.3f s"):format(fired))
    assert.is_true(fired < 1.1, ("after(0.4) fired %.3f s after it was set; it was due while " ..
      "the script computed until 0.8 s"):format(fired))
  end)

  it("in the luasrv binary, a top-level sleep after slow start-up lasts as long as asked", function()
    local status, out, err = C.exec({ C.fixture("conf_timer_stale.lua") }, 20)
    assert.equal(0, status, err)
    local slept = tonumber(out:match("slept ([%d.]+)"))
    assert(slept, "no report: " .. out .. err)
    assert.is_true(slept >= 0.19, ("srv.sleep(0.2) returned after %.3f s"):format(slept))
  end)
end)

describe("timer callback errors (luasrv binary)", function()
  local fixture = C.fixture("conf_timer_errors.lua")

  it("are logged with file:line and a traceback, and later timers still fire", function()
    local status, out, err = C.exec({ fixture }, 20)
    assert.equal("top level done\nfirst\nevery ran 4\nlater\n", out)
    assert.matches("conf_timer_errors%.lua:" .. C.line_of(fixture, 'error("timer boom")') ..
      ": timer boom\nstack traceback:", err)
    assert.matches("conf_timer_errors%.lua:" .. C.line_of(fixture, 'error("every boom")') ..
      ": every boom\nstack traceback:", err)
    assert.matches("%[error%]", err)
    assert.equal(0, status, "exit status; stderr:\n" .. err)
  end)
end)

describe("srv.run", function()
  it("returns the function's results and passes its arguments", function()
    local a, b, c = srv.run(function(x, y)
      srv.sleep(0)
      return x + y, "two", nil
    end, 1, 2)
    assert.equal(3, a)
    assert.equal("two", b)
    assert.is_nil(c)
    assert.equal(3, select("#", srv.run(function() return 1, nil, 3 end)))
  end)

  it("raises the function's error with its traceback", function()
    local ok, err = pcall(srv.run, function()
      srv.sleep(0)
      error("inner failure")
    end)
    assert.is_false(ok)
    assert.matches("timers_spec%.lua:%d+: inner failure\nstack traceback:", err)
    ok, err = pcall(srv.run, function() error({}) end)
    assert.is_false(ok)
    assert.matches("%(error object is a table value%)", err)
  end)

  it("inside a task simply calls the function", function()
    local inner = srv.run(function()
      return srv.run(function(v) srv.sleep(0) return v * 2 end, 21)
    end)
    assert.equal(42, inner)
  end)

  it("raises when srv.stop() is called before the function returns; the loop runs again after", function()
    local l
    local ok, err = pcall(srv.run, function()
      l = srv.tcp.listen({ port = 0 }, function() end)
      srv.after(0.01, function() srv.stop() end)
      srv.sleep(5)
    end)
    assert.is_false(ok)
    assert.matches("srv.run: stopped before the function returned", err)
    assert.same({ nil, "closed", "ECLOSED" }, { l:address() })
    assert.equal("again", srv.run(function() srv.sleep(0.01) return "again" end))
  end)
end)
