-- luasrv.redis against a real redis-server that the spec starts on a free port (persistence
-- off) and stops at the end: every reply type, errors, pipelines, transactions, pub/sub across
-- connections, the pool (counted with CLIENT LIST), timeouts, a server killed mid-command,
-- AUTH and ACL users, databases, a Unix socket and TLS.
local srv = require "luasrv"
local redis = require "luasrv.redis"
local helper = require "helper"
local R = require "redis_helper"
local T = require "tls_helper"

local server

-- Runs fn(r) in a task with a fresh client (closed at the end, whatever happens).
local function with_client(opts, fn)
  if fn == nil then opts, fn = nil, opts end
  return srv.run(function()
    local r = assert(redis.connect(server:opts(opts)))
    local ok, err = pcall(fn, r)
    r:close()
    if not ok then error(err, 0) end
  end)
end

-- Runs fn(server, box) in a task with a redis-server of its own (opts as R.start's); fn may
-- replace box.server (a restart); the one there at the end is stopped, whatever happens.
local function with_own_server(opts, fn)
  local own = { server = R.start(opts) }
  local ok, err = pcall(srv.run, fn, own.server, own)
  own.server:stop()
  if not ok then error(err, 0) end
end

-- Runs fn(i) for i = 1..n in n tasks at once and waits for them all; raises the first failure.
local function run_tasks(n, fn)
  local tasks = {}
  for i = 1, n do tasks[i] = helper.spawn(fn, i) end
  local deadline = srv.monotime() + 20
  for _, t in ipairs(tasks) do
    while not t.done and srv.monotime() < deadline do srv.sleep(0.01) end
    assert.is_true(t.ok, t.err)
  end
end

-- Clients the server had when the test began (connections pooled by earlier tests).
local baseline = 0

-- Waits (polling) until the server reports `n` clients more than the baseline.
local function wait_clients(n)
  n = n + baseline
  local deadline = srv.monotime() + 5
  local have
  repeat
    have = server:clients()
    if have == n then return end
    srv.sleep(0.02)
  until srv.monotime() > deadline
  assert.equal(n, have)
end

describe("redis client against redis-server", function()
  setup(function()
    assert(R.available(), "redis-server is not installed (run scripts/setup)")
    server = R.start({ unixsocket = true })
  end)

  teardown(function()
    if server then server:stop() end
  end)

  before_each(function()
    server:cli("FLUSHALL")
    baseline = server:clients()
  end)

  it("maps every RESP2 reply type to Lua", function()
    with_client(function(r)
      assert.equal("OK", r:set("s", "value"))
      assert.equal("value", r:get("s"))
      local v, err = r:get("missing")
      assert.is_nil(v)
      assert.is_nil(err)
      assert.equal(1, r:incr("n"))
      assert.equal("integer", math.type(r:incrby("n", 41)))
      assert.equal("42.5", r:incrbyfloat("n", 0.5))
      assert.equal(3, r:rpush("l", "a", "b", "c"))
      assert.same({ "a", "b", "c" }, r:lrange("l", 0, -1))
      assert.same({}, r:lrange("nothing", 0, -1))
      assert.same({ "value", redis.null, "42.5" }, r:mget("s", "missing", "n"))
      assert.same({ 1, { "two", { 3 } }, "four" },
        r:eval("return {1, {'two', {3}}, 'four'}", 0))
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      bytes = table.concat(bytes):rep(4)
      assert.equal("OK", r:set("bin", bytes))
      assert.is_true(r:get("bin") == bytes)
      local big = ("x"):rep(3 * 1024 * 1024)
      assert.equal("OK", r:set("big", big))
      assert.equal(#big, #r:get("big"))
      assert.equal("PONG", r:ping())
      assert.equal(2, r:call("exists", "s", "l"))
    end)
  end)

  it("answers an error reply with nil, message, code and keeps the connection", function()
    with_client(function(r)
      r:set("s", "x")
      local v, err, code = r:lpush("s", "y")
      assert.is_nil(v)
      assert.matches("^WRONGTYPE Operation against a key holding the wrong kind of value", err)
      assert.equal("WRONGTYPE", code)
      v, err, code = r:call("NOSUCHCOMMAND", "a")
      assert.is_nil(v)
      assert.matches("^ERR unknown command", err)
      assert.equal("ERR", code)
      assert.equal("x", r:get("s"))
      wait_clients(1)
    end)
  end)

  it("maps RESP3 maps, sets, doubles, booleans and nulls with resp = 3", function()
    with_client({ resp = 3 }, function(r)
      r:hset("h", "a", "1", "b", "2")
      assert.same({ a = "1", b = "2" }, r:hgetall("h"))
      r:sadd("set", "x", "y", "z")
      assert.same({ x = true, y = true, z = true }, r:smembers("set"))
      r:zadd("z", 1.5, "m")
      assert.equal(1.5, r:zscore("z", "m"))
      assert.equal("float", math.type(r:zscore("z", "m")))
      assert.is_nil(r:get("missing"))
      assert.is_true(r:eval("redis.setresp(3); return true", 0))
      assert.is_false(r:eval("redis.setresp(3); return false", 0))
      assert.equal(2.5, r:eval("redis.setresp(3); return {double = 2.5}", 0))
      assert.equal("123456789012345678901234567890",
        r:eval("redis.setresp(3); return {big_number = '123456789012345678901234567890'}", 0))
      local info = r:client("INFO") -- a verbatim string in RESP3
      assert.matches("^id=%d+ ", info)
      assert.matches("resp=3", info)
    end)
  end)

  it("sends a pipeline of 10,000 commands in one write and reads every reply", function()
    with_client(function(r)
      local results, n = r:pipeline(function(p)
        for i = 1, 10000 do p:set("k" .. i, ("v"):rep(i % 100)) end
      end)
      assert.equal(10000, n)
      for i = 1, n do assert.equal("OK", results[i]) end
      results, n = r:pipeline(function(p)
        for i = 1, 10000 do p:get("k" .. i) end
        p:get("missing")
        p:hget("k1", "field")  -- WRONGTYPE, in the middle of the replies
        p:incr("counter")
      end)
      assert.equal(10003, n)
      for i = 1, 10000 do assert.equal(("v"):rep(i % 100), results[i]) end
      assert.equal(redis.null, results[10001])
      assert.matches("^WRONGTYPE", redis.is_error(results[10002]))
      assert.equal(1, results[10003])
      assert.equal(10001, r:dbsize())
      assert.same({}, (r:pipeline(function() end)))
    end)
  end)

  it("runs MULTI/EXEC transactions, with errors inside and WATCH", function()
    with_client(function(r)
      r:set("s", "text")
      assert.equal("OK", r:multi())
      assert.equal("QUEUED", r:incr("a"))
      assert.equal("QUEUED", r:incr("s"))
      assert.equal("QUEUED", r:incr("a"))
      local res = r:exec()
      assert.equal(1, res[1])
      assert.matches("^ERR value is not an integer", redis.is_error(res[2]))
      assert.equal(2, res[3])
      -- DISCARD drops the queue.
      r:multi(); r:incr("a"); assert.equal("OK", r:discard())
      assert.equal("2", r:get("a"))
      -- WATCH: another client changes the key, so EXEC answers nil.
      assert.equal("OK", r:watch("a"))
      local other = assert(redis.connect(server:opts()))
      other:set("a", "100")
      other:close()
      r:multi(); r:incr("a")
      local v, err = r:exec()
      assert.is_nil(v)
      assert.is_nil(err)
      assert.equal("100", r:get("a"))
      -- A transaction in a pipeline.
      local pres = r:pipeline(function(p) p:multi(); p:incr("a"); p:incr("a"); p:exec() end)
      assert.same({ "OK", "QUEUED", "QUEUED", { 101, 102 } }, pres)
    end)
  end)

  it("delivers pub/sub messages to a task waiting while others publish", function()
    srv.run(function()
      local sub = assert(assert(redis.connect(server:opts())):subscribe("news", "sport"))
      local psub = assert(assert(redis.connect(server:opts())):psubscribe("log.*"))
      local got, pgot = {}, {}
      local reader = helper.spawn(function()
        for channel, message in sub:messages() do
          got[#got + 1] = channel .. "=" .. message
          if #got == 100 then break end
        end
      end)
      local preader = helper.spawn(function()
        while #pgot < 2 do
          local channel, message, pattern = assert(psub:receive(5))
          pgot[#pgot + 1] = table.concat({ pattern, channel, message }, " ")
        end
      end)
      local pub = assert(redis.connect(server:opts()))
      for i = 1, 50 do
        assert.equal(1, pub:publish("news", "n" .. i))
        assert.equal(1, pub:publish("sport", "s" .. i))
      end
      assert.equal(0, pub:publish("weather", "rain"))
      assert.equal(1, pub:publish("log.app", "started"))
      assert.equal(1, pub:publish("log.db", "slow"))
      local deadline = srv.monotime() + 5
      while not (reader.done and preader.done) and srv.monotime() < deadline do srv.sleep(0.01) end
      assert.is_true(reader.ok, reader.err)
      assert.is_true(preader.ok, preader.err)
      assert.equal("news=n1", got[1])
      assert.equal("sport=s1", got[2])
      assert.equal("sport=s50", got[100])
      assert.same({ "log.* log.app started", "log.* log.db slow" }, pgot)
      -- A receive with a timeout answers "timeout" and the subscription goes on.
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { sub:receive(0.05) })
      assert.truthy(sub:subscribe("weather"))
      pub:publish("weather", "sun")
      assert.same({ "weather", "sun" }, { sub:receive(5) })
      assert.truthy(sub:unsubscribe("news"))
      while pub:publish("news", "unheard") ~= 0 do srv.sleep(0.01) end
      pub:publish("sport", "heard")
      local channel, message
      repeat channel, message = sub:receive(5) until channel ~= "news"
      assert.same({ "sport", "heard" }, { channel, message })
      -- Closing the subscription ends a waiting messages() loop quietly.
      local ended = helper.spawn(function()
        for _ in sub:messages() do end
      end)
      srv.sleep(0.05)
      sub:close()
      psub:close()
      deadline = srv.monotime() + 5
      while not ended.done and srv.monotime() < deadline do srv.sleep(0.01) end
      assert.is_true(ended.ok, ended.err)
      pub:close()
    end)
  end)

  it("delivers pub/sub messages as RESP3 pushes with resp = 3", function()
    srv.run(function()
      local sub = assert(assert(redis.connect(server:opts({ resp = 3 }))):subscribe("r3"))
      local psub = assert(assert(redis.connect(server:opts({ resp = 3 }))):psubscribe("r3.*"))
      local pub = assert(redis.connect(server:opts({ resp = 3 })))
      assert.equal(1, pub:publish("r3", "hello"))
      assert.equal(1, pub:publish("r3.x", "pattern"))
      assert.same({ "r3", "hello" }, { sub:receive(5) })
      assert.same({ "r3.x", "pattern", "r3.*" }, { psub:receive(5) })
      sub:close(); psub:close(); pub:close()
    end)
  end)

  it("reuses released connections from the pool (counted with CLIENT LIST)", function()
    srv.run(function()
      for i = 1, 50 do
        local r = assert(redis.connect(server:opts()))
        assert.equal(i, r:incr("n"))
        r:release()
      end
      wait_clients(1)
      -- Five at once make five; released, they stay pooled and are used again.
      local clients = {}
      for i = 1, 5 do clients[i] = assert(redis.connect(server:opts())) end
      wait_clients(5)
      local ids = {}
      for i = 1, 5 do
        ids[clients[i]:client("ID")] = true
        clients[i]:release()
      end
      for i = 1, 5 do clients[i] = assert(redis.connect(server:opts())) end
      for i = 1, 5 do
        assert.is_true(ids[clients[i]:client("ID")])
        clients[i]:release()
      end
      wait_clients(5)
      -- A connection in a transaction, subscribed or on another database is not pooled.
      local r = assert(redis.connect(server:opts()))
      r:multi()
      r:release()
      r = assert(redis.connect(server:opts()))
      r:select(3)
      r:release()
      wait_clients(3)
      -- Another database is another pool.
      local r1 = assert(redis.connect(server:opts({ db = 1 })))
      r1:set("k", "in db 1")
      r1:release()
      wait_clients(4)
      r1 = assert(redis.connect(server:opts({ db = 1 })))
      assert.equal("in db 1", r1:get("k"))
      r1:release()
      r = assert(redis.connect(server:opts()))
      assert.is_nil(r:get("k"))
      r:release()
      wait_clients(4)
    end)
  end)

  it("caps the pool and closes connections idle past the idle timeout", function()
    srv.run(function()
      local o = server:opts({ pool_size = 2, pool_idle = 0.3, db = 5 })
      local clients = {}
      for i = 1, 5 do clients[i] = assert(redis.connect(o)) end
      wait_clients(5)
      for i = 1, 5 do clients[i]:release() end
      wait_clients(2)
      local r = assert(redis.connect(o))
      local id = r:client("ID")
      r:release()
      srv.sleep(0.5)
      r = assert(redis.connect(o))
      assert.are_not.equal(id, r:client("ID"))
      r:release()
      -- The two idle ones were closed on the way: only the new one is left.
      wait_clients(1)
      r = assert(redis.connect(o))
      r:close()
      wait_clients(0)
    end)
  end)

  it("times out a command that takes too long, closes, and connects again", function()
    srv.run(function()
      local r = assert(redis.connect(server:opts({ timeout = 0.2, db = 7 })))
      local t0 = srv.monotime()
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { r:blpop("empty", 0) })
      assert.is_true(srv.monotime() - t0 >= 0.15)
      assert.same({ nil, "closed", "ECLOSED" }, { r:get("x") })
      r:release()
      wait_clients(0)
      r = assert(redis.connect(server:opts({ timeout = 0.2, db = 7 })))
      assert.equal("PONG", r:ping())
      -- A blocking command within the timeout works.
      local pusher = helper.spawn(function()
        srv.sleep(0.05)
        local p = assert(redis.connect(server:opts({ db = 7 })))
        p:rpush("q", "job")
        p:close()
      end)
      assert.same({ "q", "job" }, r:blpop("q", 1))
      while not pusher.done do srv.sleep(0.01) end
      assert.is_true(pusher.ok, pusher.err)
      r:close()
    end)
  end)

  it("reports a server killed mid-command and connects once it is back", function()
    with_own_server(nil, function(own, box)
      local o = own:opts({ timeout = 10 })
      local pooled = assert(redis.connect(o))
      pooled:set("k", "v")
      pooled:release()
      local r = assert(redis.connect(own:opts({ timeout = 10 })))
      local res = {}
      local waiting = helper.spawn(function()
        res = { r:blpop("never", 0) }
      end)
      srv.sleep(0.1)
      local t0 = srv.monotime()
      own:stop("KILL")
      while not waiting.done do srv.sleep(0.01) end
      assert.is_true(srv.monotime() - t0 < 2)
      assert.is_nil(res[1])
      assert.is_true(res[2] == "closed" or res[3] == "ECONNRESET", tostring(res[2]))
      r:close()
      srv.sleep(1.1) -- long enough for the pool to check its idle connection when taken
      assert.same({ nil, "connection refused", "ECONNREFUSED" }, { redis.connect(o) })
      own = R.start({ port = own.port })
      box.server = own
      local again = assert(redis.connect(o))
      assert.equal("PONG", again:ping())
      assert.is_nil(again:get("k")) -- a new server: nothing was persisted
      again:close()
    end)
  end)

  it("authenticates with a password, an ACL user and HELLO 3", function()
    with_own_server({ password = "s3cret pass" }, function(own)
      local o = own:opts()
      local r = assert(redis.connect(o))
      assert.equal("PONG", r:ping())
      assert.equal("OK", r:acl("SETUSER", "alice", "on", ">alice-pw", "~*", "+@all"))
      r:close()
      local v, e, code = redis.connect(own:opts({ password = "wrong" }))
      assert.is_nil(v)
      assert.matches("^WRONGPASS", e)
      assert.equal("WRONGPASS", code)
      r = assert(redis.connect(own:opts({ password = false })))
      v, e, code = r:get("k")
      assert.is_nil(v)
      assert.matches("^NOAUTH", e)
      assert.equal("NOAUTH", code)
      r:close()
      r = assert(redis.connect(own:opts({ username = "alice", password = "alice-pw" })))
      assert.equal("alice", r:acl("WHOAMI"))
      r:close()
      r = assert(redis.connect(own:opts({ username = "alice", password = "alice-pw", resp = 3, db = 2 })))
      assert.equal("alice", r:acl("WHOAMI"))
      r:set("k", "v")
      r:close()
      assert.equal("v", own:cli("-n 2 GET k"))
      v, e = redis.connect(own:opts({ resp = 3, password = "nope" }))
      assert.is_nil(v)
      assert.matches("WRONGPASS", e)
    end)
  end)

  it("multiplexes the commands of many tasks over one connection per worker", function()
    srv.run(function()
      local o = server:opts({ multiplex = true, db = 6 })
      local r = assert(redis.connect(o))
      assert.equal("luasrv.redis.Client (multiplexed)", tostring(r))
      assert.equal("OK", r:set("k", "v"))
      assert.equal("v", r:get("k"))
      assert.same({ nil, nil }, { r:get("missing") })
      assert.same({ nil, "WRONGTYPE Operation against a key holding the wrong kind of value", "WRONGTYPE" },
        { r:lpush("k", "x") })
      -- The arguments after the function are passed on to it.
      local function queue_two(p, key, other)
        p:get(key)
        p:get(other)
      end
      assert.same({ { "v", redis.null }, 2 }, { r:pipeline(queue_two, "k", "missing") })
      -- A pipeline of one command is still a table of replies.
      assert.same({ { "v" }, 1 }, { r:pipeline(function(p) p:get("k") end) })
      assert.same({ { redis.null }, 1 }, { r:pipeline(function(p) p:get("missing") end) })
      -- 100 tasks, each with its own client, 20 rounds of a command and a pipeline.
      run_tasks(100, function(i)
        local c = assert(redis.connect(o))
        for j = 1, 20 do
          assert.equal("integer", math.type(c:incr("total")))
          local res = assert(c:pipeline(function(p)
            p:set("t" .. i, j)
            p:get("t" .. i)
            p:hget("k", "f") -- WRONGTYPE, in its place among the replies
          end))
          assert.equal("OK", res[1])
          assert.equal(tostring(j), res[2])
          assert.matches("^WRONGTYPE", redis.is_error(res[3]))
        end
        c:release()
      end)
      assert.equal("2000", r:get("total"))
      -- All of it went over one connection.
      wait_clients(1)
      assert.equal(1, helper.count(server:cli("CLIENT LIST"), "db=6"))
      -- The server closes it while it is unused: the next commands, a second later, get a new
      -- one without noticing, also when many tasks send at once while it is made again.
      server:cli("CLIENT KILL TYPE normal")
      srv.sleep(1.1)
      run_tasks(50, function()
        assert.equal("2000", (assert(r:get("total"))))
      end)
      -- The same burst on a client whose connection does not exist yet.
      local fresh = assert(redis.connect(server:opts({ multiplex = true, db = 8 })))
      run_tasks(50, function(i)
        assert.equal("integer", math.type(assert(fresh:rpush("list", i))))
      end)
      assert.equal(50, fresh:llen("list"))
      -- Commands that would change or block the shared connection are refused.
      for _, f in ipairs({ function() return r:multi() end, function() return r:select(1) end,
                           function() return r:blpop("q", 0) end, function() return r:subscribe("c") end,
                           function() return r:pipeline(function(p) p:watch("k") end) end,
                           function() return r:pipeline(function(p) p:get("k"); p:brpop("q", 0) end) end }) do
        local ok, err = pcall(f)
        assert.is_false(ok)
        assert.matches("cannot be sent on a multiplexed client", err)
      end
      r:release()
    end)
  end)

  it("fails the waiting commands of a multiplexed connection when the server goes, then reconnects", function()
    with_own_server(nil, function(own, box)
      local o = own:opts({ multiplex = true, timeout = 10 })
      local r = assert(redis.connect(o))
      assert.equal("OK", r:set("k", "v"))
      -- A slow script holds the server while tasks wait on the shared connection.
      local results = {}
      local tasks = {}
      for i = 1, 10 do
        tasks[i] = helper.spawn(function()
          results[i] = { r:eval("local t = redis.call('TIME') while true do end", 0) }
        end)
      end
      srv.sleep(0.2)
      own:stop("KILL")
      for _, t in ipairs(tasks) do
        while not t.done do srv.sleep(0.01) end
      end
      for i = 1, 10 do
        assert.is_nil(results[i][1])
        assert.is_true(results[i][2] == "closed" or results[i][3] == "ECONNRESET", tostring(results[i][2]))
      end
      assert.same({ nil, "connection refused", "ECONNREFUSED" }, { r:get("k") })
      own = R.start({ port = own.port })
      box.server = own
      assert.equal("OK", r:set("k", "again"))
      assert.equal("again", r:get("k"))
    end)
  end)

  it("connects through a Unix socket and a redis:// URL", function()
    srv.run(function()
      local r = assert(redis.connect({ path = server.path, timeout = 5 }))
      assert.equal("OK", r:set("u", "by socket"))
      r:close()
      r = assert(redis.connect(("redis://127.0.0.1:%d/4"):format(server.port)))
      assert.equal("OK", r:set("u", "db 4"))
      r:close()
      r = assert(redis.connect("unix://" .. server.path .. "?db=4"))
      assert.equal("db 4", r:get("u"))
      r:close()
      assert.same({ nil, "no such file or directory", "ENOENT" },
        { redis.connect({ path = server.path .. ".none" }) })
    end)
  end)

  it("speaks TLS to a TLS redis-server", function()
    local ca = T.new_ca()
    local cert, key = ca.issue("redis")
    local port = helper.free_tcp_ports(1)[1]
    local ok, err = pcall(with_own_server, { extra = { "--tls-port", tostring(port), "--tls-cert-file",
      cert, "--tls-key-file", key, "--tls-ca-cert-file", ca.pem, "--tls-auth-clients", "no" } }, function()
      local r = assert(redis.connect({ host = "127.0.0.1", port = port, timeout = 5,
        tls = { ca = ca.pem, server_name = "localhost" } }))
      assert.equal("OK", r:set("t", "over tls"))
      assert.equal("over tls", r:get("t"))
      r:close()
      -- Verification is on by default: the test CA is not a system CA.
      local v, e = redis.connect({ host = "127.0.0.1", port = port, timeout = 5, tls = true })
      assert.is_nil(v)
      assert.matches("^tls: certificate verify failed", e)
    end)
    ca.cleanup()
    assert(ok, err)
  end)
end)
