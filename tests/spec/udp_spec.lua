-- srv.udp: listeners, client sockets, peers and the limits, on real sockets bound to port 0.
-- The in-process tests run a listener and its clients on one loop inside srv.run; the last
-- group starts the real binary on tests/fixtures/udp_server.lua.
local srv = require "luasrv"
local helper = require "helper"

-- Runs fn(port, listener) with a listener on 127.0.0.1:0 (or opts.host), closed afterwards.
local function with_listener(opts, handler, fn)
  return srv.run(function()
    local listener = srv.udp.listen(opts, handler)
    local _, port = listener:address()
    local ok, err = pcall(fn, port, listener)
    listener:close()
    if not ok then error(err, 0) end
  end)
end

local function echo(data, peer, sock)
  assert(sock:send(data, peer))
end

local function ipv6_available()
  return srv.run(function()
    local ok, sock = pcall(srv.udp.socket, { host = "::1", port = 0 })
    if ok then sock:close() end
    return ok
  end)
end

describe("srv.udp", function()
  it("answers a datagram through sock:send(data, peer)", function()
    with_listener({ port = 0 }, function(data, peer, sock)
      assert(sock:send(("%s from %s"):format(data, peer.host), peer))
    end, function(port, listener)
      assert.matches("^udp://127%.0%.0%.1:%d+$", listener:url())
      assert.is_true(port > 0)
      local client = srv.udp.socket({ timeout = 5 })
      assert.is_true(client:sendto("ping", "127.0.0.1", port))
      local data, peer = client:recvfrom()
      assert.equal("ping from 127.0.0.1", data)
      assert.equal("127.0.0.1", peer.host)
      assert.equal(port, peer.port)
      assert.equal("inet", peer.family)
      assert.equal("127.0.0.1:" .. port, tostring(peer))
      assert.equal(srv.udp.address("127.0.0.1", port), peer)
      client:close()
    end)
  end)

  it("gives the handler a peer that identifies the client", function()
    local seen = {}
    with_listener({ port = 0 }, function(data, peer, sock)
      seen[#seen + 1] = peer
      sock:send(data, peer)
    end, function(port)
      local a, b = srv.udp.socket({ timeout = 5 }), srv.udp.socket({ timeout = 5 })
      a:sendto("a", "127.0.0.1", port)
      assert.equal("a", a:recvfrom())
      b:sendto("b", "127.0.0.1", port)
      assert.equal("b", b:recvfrom())
      local _, a_port = a:address()
      local _, b_port = b:address()
      assert.equal(a_port, seen[1].port)
      assert.equal(b_port, seen[2].port)
      assert.are_not.equal(seen[1], seen[2])
      assert.is_nil(seen[1].nonsense)
      a:close()
      b:close()
    end)
  end)

  it("delivers a zero-length datagram as an empty string", function()
    local got
    with_listener({ port = 0 }, function(data, peer, sock)
      got = data
      sock:send(data, peer)
    end, function(port)
      local client = srv.udp.socket({ timeout = 5 })
      assert(client:sendto("", "127.0.0.1", port))
      local data, peer = client:recvfrom()
      assert.equal("", data)
      assert.equal(port, peer.port)
      assert.equal("", got)
      client:close()
    end)
  end)

  it("carries 1,200-byte and 60 KiB datagrams whole", function()
    with_listener({ port = 0 }, echo, function(port)
      local client = srv.udp.socket({ timeout = 5 })
      for _, size in ipairs({ 1200, 60 * 1024 }) do
        local parts = {}
        for i = 1, size // 8 do parts[i] = ("%07d\n"):format(i) end
        local payload = table.concat(parts)
        assert.equal(size, #payload)
        assert(client:sendto(payload, "127.0.0.1", port))
        local data = client:recvfrom()
        assert.equal(size, #data)
        assert.is_true(data == payload, "the datagram came back altered")
      end
      client:close()
    end)
  end)

  it("holds up for 500 request/reply rounds", function()
    local handled = 0
    with_listener({ port = 0 }, function(data, peer, sock)
      handled = handled + 1
      sock:send("re:" .. data, peer)
    end, function(port, listener)
      local client = srv.udp.socket({ timeout = 5 })
      for i = 1, 500 do
        assert(client:sendto(tostring(i), "127.0.0.1", port))
        local data = client:recvfrom()
        assert.equal("re:" .. i, data)
      end
      assert.equal(500, handled)
      local stats = listener:stats()
      assert.equal(500, stats.received)
      assert.equal(500, stats.sent)
      assert.equal(0, stats.dropped_busy + stats.dropped_truncated + stats.handler_errors)
      assert.equal(0, stats.pending)
      client:close()
    end)
  end)

  it("answers many datagrams in flight, each with its own reply", function()
    with_listener({ port = 0 }, function(data, peer, sock)
      assert(sock:send(data .. "/" .. peer.port, peer))
    end, function(port)
      local clients, answered = {}, 0
      for c = 1, 10 do clients[c] = srv.udp.socket({ timeout = 5 }) end
      -- Rounds of 50 datagrams in flight (few enough for the kernel's receive buffer), of
      -- sizes up to 2,600 bytes: some replies are too big to be gathered with the others.
      local function size_of(c, i) return (c * 97 + i * 131) % 2600 end
      for round = 0, 3 do
        for c = 1, 10 do
          for i = round * 5 + 1, round * 5 + 5 do
            assert(clients[c]:sendto(("%d.%d:"):format(c, i) .. ("p"):rep(size_of(c, i)),
              "127.0.0.1", port))
          end
        end
        for c = 1, 10 do
          local _, my_port = clients[c]:address()
          for i = round * 5 + 1, round * 5 + 5 do
            local data = assert(clients[c]:recvfrom())
            local prefix, pad, from = data:match("^(%d+%.%d+):(p*)/(%d+)$")
            assert.equal(("%d.%d"):format(c, i), prefix)
            assert.equal(size_of(c, i), #pad)
            assert.equal(my_port, tonumber(from))
            answered = answered + 1
          end
        end
      end
      for c = 1, 10 do clients[c]:close() end
      assert.equal(200, answered)
    end)
  end)

  it("runs handlers as coroutines that may sleep, several at once", function()
    with_listener({ port = 0 }, function(data, peer, sock)
      srv.sleep(tonumber(data))
      sock:send(data, peer)
    end, function(port)
      local client = srv.udp.socket({ timeout = 5 })
      local start = srv.monotime()
      client:sendto("0.3", "127.0.0.1", port)
      client:sendto("0.1", "127.0.0.1", port)
      assert.equal("0.1", client:recvfrom())
      assert.equal("0.3", client:recvfrom())
      -- Run one after the other they would take 0.4 s.
      assert.is_true(srv.monotime() - start < 0.38)
      client:close()
    end)
  end)

  it("times out a client recvfrom and recv", function()
    with_listener({ port = 0 }, function() end, function(port)
      local client = srv.udp.socket()
      client:sendto("no answer", "127.0.0.1", port)
      local start = srv.monotime()
      local data, err, code = client:recvfrom(0.2)
      local took = srv.monotime() - start
      assert.is_nil(data)
      assert.equal("timeout", err)
      assert.equal("ETIMEDOUT", code)
      assert.is_true(took >= 0.19 and took < 2, "took " .. took)
      client:settimeout(0.05)
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { client:recvfrom() })
      assert(client:connect("127.0.0.1", port))
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { client:recv() })
      client:close()
    end)
  end)

  it("keeps datagrams that arrive while no one is receiving", function()
    with_listener({ port = 0 }, echo, function(port)
      local client = srv.udp.socket({ timeout = 5 })
      for i = 1, 3 do client:sendto("m" .. i, "127.0.0.1", port) end
      srv.sleep(0.1)
      assert.equal("m1", client:recvfrom())
      assert.equal("m2", client:recvfrom())
      assert.equal("m3", client:recvfrom())
      client:close()
    end)
  end)

  it("talks to one peer through connect, send and recv", function()
    with_listener({ port = 0 }, echo, function(port)
      local client = srv.udp.socket({ timeout = 5 })
      assert.is_true(client:connect("127.0.0.1", port))
      assert.equal(port, client:peer().port)
      assert.is_true(client:send("connected"))
      assert.equal("connected", client:recv())
      assert.is_true(client:send(""))
      assert.equal("", client:recv())
      client:close()
    end)
  end)

  it("reports connection refused on a connected socket when nothing listens", function()
    local port = srv.run(function()
      local probe = srv.udp.socket({ host = "127.0.0.1", port = 0 })
      local _, p = probe:address()
      probe:close()
      return p
    end)
    srv.run(function()
      local client = srv.udp.socket({ timeout = 2 })
      assert(client:connect("127.0.0.1", port))
      assert(client:send("anyone?"))
      local data, err, code = client:recv()
      assert.is_nil(data)
      assert.equal("connection refused", err)
      assert.equal("ECONNREFUSED", code)
      client:close()
    end)
  end)

  it("resolves host names through libuv for sendto and connect", function()
    with_listener({ port = 0 }, echo, function(port)
      local client = srv.udp.socket({ timeout = 5 })
      assert.is_true(client:sendto("by name", "localhost", port))
      assert.equal("by name", client:recvfrom())
      assert.is_true(client:sendto("cached", "localhost", port))
      assert.equal("cached", client:recvfrom())
      client:close()
      local connected = srv.udp.socket({ timeout = 5 })
      assert.is_true(connected:connect("localhost", port))
      connected:send("x")
      assert.equal("x", connected:recv())
      connected:close()
      local bad = srv.udp.socket({ timeout = 5 })
      local ok, err, code = bad:sendto("x", "no-such-host.invalid", port)
      assert.is_nil(ok)
      assert.is_string(err)
      assert.matches("^EAI_", code)
      bad:close()
    end)
  end)

  it("serves IPv6", function()
    if not ipv6_available() then
      pending("no IPv6 loopback here")
      return
    end
    with_listener({ host = "::1", port = 0 }, echo, function(port, listener)
      assert.matches("^udp://%[::1%]:%d+$", listener:url())
      local client = srv.udp.socket({ timeout = 5 })
      assert(client:sendto("six", "::1", port))
      local data, peer = client:recvfrom()
      assert.equal("six", data)
      assert.equal("::1", peer.host)
      assert.equal("inet6", peer.family)
      assert.equal("[::1]:" .. port, tostring(peer))
      client:close()
    end)
  end)

  it("drops a datagram larger than recv_size, counts it and never hands it on truncated", function()
    local sizes = {}
    with_listener({ port = 0, recv_size = 1024 }, function(data, peer, sock)
      sizes[#sizes + 1] = #data
      sock:send(data, peer)
    end, function(port, listener)
      local client = srv.udp.socket({ timeout = 5 })
      client:sendto(("x"):rep(1025), "127.0.0.1", port)
      client:sendto(("y"):rep(1024), "127.0.0.1", port)
      assert.equal(("y"):rep(1024), client:recvfrom())
      assert.same({ 1024 }, sizes)
      local stats = listener:stats()
      assert.equal(1, stats.dropped_truncated)
      assert.equal(1, stats.received)
      client:close()
    end)
  end)

  it("drops a too-large datagram on a client socket too", function()
    with_listener({ port = 0 }, echo, function(port)
      local client = srv.udp.socket({ timeout = 5, recv_size = 100 })
      client:sendto(("z"):rep(101), "127.0.0.1", port)
      client:sendto("small", "127.0.0.1", port)
      assert.equal("small", client:recvfrom())
      assert.equal(1, client:stats().dropped_truncated)
      client:close()
    end)
  end)

  it("bounds the handlers waiting at once (max_pending) and counts what it drops", function()
    local started = 0
    with_listener({ port = 0, max_pending = 4 }, function(data, peer, sock)
      started = started + 1
      srv.sleep(0.3)
      sock:send(data, peer)
    end, function(port, listener)
      local client = srv.udp.socket({ timeout = 2 })
      for i = 1, 20 do client:sendto(tostring(i), "127.0.0.1", port) end
      srv.sleep(0.1)
      local stats = listener:stats()
      assert.equal(4, stats.pending)
      assert.equal(4, started)
      assert.equal(16, stats.dropped_busy)
      local replies = {}
      for _ = 1, 4 do replies[#replies + 1] = assert(client:recvfrom()) end
      table.sort(replies)
      assert.same({ "1", "2", "3", "4" }, replies)
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { client:recvfrom(0.1) })
      assert.equal(0, listener:stats().pending)
      -- Room again: the next datagram is served.
      client:sendto("again", "127.0.0.1", port)
      assert.equal("again", client:recvfrom())
      client:close()
    end)
  end)

  it("counts a failing handler and goes on serving", function()
    with_listener({ port = 0 }, function(data, peer, sock)
      if data == "boom" then error("handler failed on purpose") end
      sock:send(data, peer)
    end, function(port, listener)
      local client = srv.udp.socket({ timeout = 5 })
      client:sendto("boom", "127.0.0.1", port)
      client:sendto("after", "127.0.0.1", port)
      assert.equal("after", client:recvfrom())
      assert.equal(1, listener:stats().handler_errors)
      client:close()
    end)
  end)

  it("answers nil, \"closed\" once closed, and wakes a waiting receiver", function()
    srv.run(function()
      local client = srv.udp.socket()
      srv.after(0.05, function() client:close() end)
      assert.same({ nil, "closed", "ECLOSED" }, { client:recvfrom(5) })
      assert.same({ nil, "closed", "ECLOSED" }, { client:sendto("x", "127.0.0.1", 9) })
      assert.same({ nil, "closed", "ECLOSED" }, { client:recvfrom() })
      assert.same({ nil, "closed", "ECLOSED" }, { client:address() })
      assert.is_true(client:close())
      assert.equal("luasrv.UDPSocket (closed)", tostring(client))
    end)
  end)

  it("lets a handler outlive its closed socket", function()
    local result
    with_listener({ port = 0 }, function(_, peer, sock)
      sock:close()
      srv.sleep(0.05)
      result = { sock:send("late", peer) }
    end, function(port)
      local client = srv.udp.socket()
      client:sendto("x", "127.0.0.1", port)
      srv.sleep(0.2)
      assert.same({ nil, "closed", "ECLOSED" }, result)
      client:close()
    end)
  end)

  it("rejects misuse with errors that name the argument", function()
    srv.run(function()
      assert.error_matches(function() srv.udp.listen({ port = 70000 }, echo) end,
        "bad argument #1 to '%a*listen' %(port out of range%)")
      assert.has_error(function() srv.udp.listen({}, echo) end)
      assert.has_error(function() srv.udp.listen({ port = 0 }) end)
      assert.has_error(function() srv.udp.listen({ port = 0, recv_size = 70000 }, echo) end)
      assert.has_error(function() srv.udp.listen({ port = 0, max_pending = 0 }, echo) end)
      assert.has_error(function() srv.udp.listen({ host = "not an address", port = 0 }, echo) end)
      local client = srv.udp.socket()
      assert.has_error(function() client:sendto("x", "127.0.0.1", 0) end)
      assert.has_error(function() client:sendto({}, "127.0.0.1", 9) end)
      assert.has_error(function() client:send("x", "127.0.0.1") end)
      assert.has_error(function() client:send("x") end)
      assert.has_error(function() srv.udp.address("example.org", 53) end)
      client:close()
      local listener = srv.udp.listen({ port = 0 }, echo)
      assert.has_error(function() listener:recvfrom(0.1) end)
      assert.has_error(function() listener:connect("127.0.0.1", 9) end)
      listener:close()
    end)
  end)

  it("refuses a second listener on a port in use", function()
    srv.run(function()
      local first = srv.udp.listen({ port = 0 }, echo)
      local _, port = first:address()
      local ok, err = pcall(srv.udp.listen, { port = port }, echo)
      assert.is_false(ok)
      assert.matches("address already in use", err)
      first:close()
    end)
  end)
end)

describe("a UDP server under the luasrv command", function()
  local server

  -- Sends `data` and returns the reply (or nil, err after timeout seconds).
  local function ask(data, timeout)
    return srv.run(function()
      local client = srv.udp.socket({ timeout = timeout or 5 })
      assert(client:sendto(data, "127.0.0.1", server.port))
      local reply, err = client:recvfrom()
      client:close()
      return reply, err
    end)
  end

  local function stats()
    local reply = assert(ask("stats"))
    local t = {}
    for k, v in reply:gmatch("(%w[%w_]*)=(%d+)") do t[k] = tonumber(v) end
    return t
  end

  setup(function()
    server = helper.start(helper.path("tests/fixtures/udp_server.lua"))
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("prints its address", function()
    assert.matches("^udp://127%.0%.0%.1:%d+$", server.url)
    assert.equal("echo:hi", ask("hi"))
  end)

  it("logs a failing handler's traceback and keeps serving", function()
    assert.same({ nil, "timeout" }, { ask("boom", 0.2) })
    assert.same({ nil, "timeout" }, { ask("boom-later", 0.2) })
    assert.equal("echo:still here", ask("still here"))
    local err = server:stderr()
    assert.matches("udp://127%.0%.0%.1:%d+: handler failed: [^\n]*udp_server%.lua:%d+: udp boom\n", err)
    assert.matches("udp boom after a sleep", err, 1, true)
    assert.matches("stack traceback:", err, 1, true)
    assert.equal(2, stats().handler_errors)
  end)

  it("drops and logs a datagram larger than its receive buffer", function()
    local before = stats().dropped_truncated
    assert.same({ nil, "timeout" }, { ask(("t"):rep(1500), 0.2) })
    assert.equal(("echo:" .. ("k"):rep(1019)), ask(("k"):rep(1019)))
    assert.equal(before + 1, stats().dropped_truncated)
    assert.matches("dropped 1 datagram: larger than the 1024%-byte receive buffer %(truncated%)",
      server:stderr())
  end)

  it("stays bounded under a flood of slow requests", function()
    local flood = 400
    local before = stats().dropped_busy
    local replies = srv.run(function()
      local client = srv.udp.socket()
      for _ = 1, flood do client:sendto("slow", "127.0.0.1", server.port) end
      -- Only max_pending (16) handlers run; each answers after 1 s, the rest are dropped.
      local n = 0
      while client:recvfrom(1.5) == "slow done" do n = n + 1 end
      client:close()
      return n
    end)
    assert.equal(16, replies)
    local s = stats()
    assert.equal(1, s.pending) -- the handler answering "stats"
    -- The kernel may drop some of the flood before the server reads it: count loosely.
    local dropped = s.dropped_busy - before
    assert.is_true(dropped >= 50 and dropped <= flood - 16, "dropped_busy grew by " .. dropped)
    assert.matches("too many handlers running %(max_pending%)", server:stderr())
    assert.equal("echo:after the flood", ask("after the flood"))
    assert.is_true(server:alive())
  end)
end)
