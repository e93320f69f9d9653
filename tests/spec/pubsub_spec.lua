-- srv.pubsub: in one process (the module under busted), across workers (the binary with
-- --workers 2, WebSocket subscribers), the full-queue policies, and a broadcast to 1,000.
local srv = require "luasrv"
local helper = require "helper"
local W = require "ws_helper"

describe("srv.pubsub in one process", function()
  it("delivers a message to every subscription of its topic only", function()
    local got = srv.run(function()
      local a, b = srv.pubsub.subscribe("news"), srv.pubsub.subscribe("news")
      local other = srv.pubsub.subscribe("sport")
      assert.is_true(srv.pubsub.publish("news", "hello"))
      local r = { a:receive(0), b:receive(0), (other:receive(0)) }
      a:close(); b:close(); other:close()
      return r
    end)
    assert.same({ "hello", "hello" }, { got[1], got[2] })
    assert.is_nil(got[3])
  end)

  it("wakes a waiting subscriber", function()
    local got = srv.run(function()
      local sub = srv.pubsub.subscribe("wake")
      srv.after(0.05, function() srv.pubsub.publish("wake", "now") end)
      local t0 = srv.monotime()
      local msg = sub:receive(5)
      sub:close()
      return { msg, srv.monotime() - t0 }
    end)
    assert.equal("now", got[1])
    assert.is_true(got[2] < 1)
  end)

  it("receive times out, and a closed subscription answers closed", function()
    local r = srv.run(function()
      local sub = srv.pubsub.subscribe("quiet")
      local m1, e1 = sub:receive(0.05)
      sub:close()
      local m2, e2 = sub:receive()
      srv.pubsub.publish("quiet", "late")
      return { m1, e1, m2, e2 }
    end)
    assert.same({ nil, "timeout", nil, "closed" }, { r[1], r[2], r[3], r[4] })
  end)

  it("drops the oldest messages of a full queue and counts them", function()
    local r = srv.run(function()
      local sub = srv.pubsub.subscribe("slow", { queue = 3 })
      for i = 1, 5 do srv.pubsub.publish("slow", "m" .. i) end
      local got = {}
      for _ = 1, 3 do got[#got + 1] = sub:receive(0) end
      local dropped = sub:dropped()
      sub:close()
      return { got = got, dropped = dropped }
    end)
    assert.same({ "m3", "m4", "m5" }, r.got)
    assert.equal(2, r.dropped)
  end)

  it("closes a full subscription with on_full = 'close'", function()
    local r = srv.run(function()
      local sub = srv.pubsub.subscribe("strict", { queue = 2, on_full = "close" })
      for i = 1, 3 do srv.pubsub.publish("strict", "m" .. i) end
      return { sub:receive(0) }
    end)
    assert.same({ nil, "closed", "queue full" }, { r[1], r[2], r[3] })
  end)

  it("iterates with messages() until closed", function()
    local got = srv.run(function()
      local sub = srv.pubsub.subscribe("iter")
      srv.after(0.01, function()
        for i = 1, 3 do srv.pubsub.publish("iter", "x" .. i) end
        srv.sleep(0.01)
        sub:close()
      end)
      local seen = {}
      for msg in sub:messages() do seen[#seen + 1] = msg end
      return seen
    end)
    -- close() drops what is still queued: the messages published before it may or may not
    -- have been taken, but they come in order.
    for i, m in ipairs(got) do assert.equal("x" .. i, m) end
  end)

  it("refuses bad arguments", function()
    assert.has_error(function() srv.pubsub.publish("", "x") end)
    assert.has_error(function() srv.pubsub.publish("t", {}) end)
    assert.has_error(function() srv.pubsub.subscribe("t", { queue = 0 }) end)
    assert.has_error(function() srv.pubsub.subscribe("t", { on_full = "explode" }) end)
  end)

  it("broadcasts one message to 1,000 waiting subscribers", function()
    local r = srv.run(function()
      local received, subs = 0, {}
      for i = 1, 1000 do
        subs[i] = srv.pubsub.subscribe("crowd")
        srv.after(0, function()
          if subs[i]:receive(5) == "to all" then received = received + 1 end
        end)
      end
      srv.sleep(0.05)
      srv.pubsub.publish("crowd", "to all")
      local deadline = srv.monotime() + 5
      while received < 1000 and srv.monotime() < deadline do srv.sleep(0.01) end
      for _, s in ipairs(subs) do s:close() end
      return received
    end)
    assert.equal(1000, r)
  end)
end)

describe("srv.pubsub across workers", function()
  local server

  setup(function()
    server = helper.start(helper.path("tests/fixtures/pubsub_app.lua"),
      { flags = { "--workers", "2" }, args = { "0" } })
  end)
  teardown(function()
    if server then server:cleanup() end
  end)

  local function publish(port, topic, body)
    local conn = W.connect_raw(port)
    conn:write(("POST /pub/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s")
      :format(topic, #body, body))
    local resp = conn:read("a")
    conn:close()
    return resp
  end

  it("reaches WebSocket subscribers in every worker", function()
    srv.run(function()
      local conns, workers = {}, {}
      for i = 1, 40 do
        local conn, status = W.open(server.port, "/sub/room")
        assert.equal(101, status)
        local _, hello = W.read_frame(conn)
        workers[hello] = true
        conns[i] = conn
      end
      assert.is_true(workers["worker 1"] and workers["worker 2"], "subscribers on both workers")
      for round = 1, 3 do
        assert.matches("published", publish(server.port, "room", "round " .. round))
        for _, conn in ipairs(conns) do
          local op, payload = W.read_frame(conn)
          assert.same({ W.OP.text, "round " .. round }, { op, payload })
        end
      end
      -- A subscriber's own message goes to everyone, itself included.
      conns[1]:write(W.frame("text", "from a client"))
      for _, conn in ipairs(conns) do
        local _, payload = W.read_frame(conn)
        assert.equal("from a client", payload)
      end
      for _, conn in ipairs(conns) do W.close(conn) end
    end)
  end)

  it("keeps topics apart across workers", function()
    srv.run(function()
      local a = W.open(server.port, "/sub/alpha")
      local b = W.open(server.port, "/sub/beta")
      W.read_frame(a); W.read_frame(b)
      publish(server.port, "beta", "for beta")
      publish(server.port, "alpha", "for alpha")
      local _, pa = W.read_frame(a)
      local _, pb = W.read_frame(b)
      assert.same({ "for alpha", "for beta" }, { pa, pb })
      W.close(a); W.close(b)
    end)
  end)
end)
