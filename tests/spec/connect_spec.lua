-- srv.tcp.connect to a name with both an IPv6 and an IPv4 address (as localhost has on a
-- stock Debian 12): RFC 8305 Happy Eyeballs, with a fresh handle per attempt. The client
-- runs in a private mount namespace (unshare -m) whose /etc/hosts maps the test names; the
-- servers are Python's, on one port number for both families.
local helper = require "helper"
local C = require "conformance"

local q = helper.shell_quote
local hosts = helper.tmpname(".hosts")

-- Starts the servers (modes for 127.0.0.1 and ::1, and more IPv4 loopback addresses that
-- serve); returns pid, port.
local function servers(mode4, mode6, ...)
  local p = io.popen(helper.clean(("python3 -u %s %s %s %s"):format(
    q(C.fixture("connect_servers.py")), mode4, mode6, table.concat({ ... }, " "))))
  local line = p:read("l") or ""
  local pid, port = line:match("^ready (%d+) (%d+)$")
  assert(pid, "servers did not start: " .. line)
  return { pid = pid, port = tonumber(port), proc = p }
end

local function stop(s)
  os.execute("kill " .. s.pid .. " 2>/dev/null")
  s.proc:close()
end

-- Runs the client against `name` inside the namespace; returns its words.
local function client(name, port, timeout)
  local env = os.getenv("LUASRV_SANITIZED") and "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 " or ""
  local cmd = ("unshare -m sh -c %s"):format(q(("mount --bind %s /etc/hosts && exec env %s%s %s %s %d %s")
    :format(q(hosts), env, q(helper.bin), q(C.fixture("connect_client.lua")), name, port,
            tostring(timeout or 5))))
  local out = helper.capture(cmd .. " 2>&1")
  local words = {}
  for w in out:gmatch("[^\t\n]+") do words[#words + 1] = w end
  return words, out
end

describe("srv.tcp.connect to a name with two address families", function()
  setup(function()
    helper.write_file(hosts, table.concat({
      "127.0.0.1 localhost",
      "::1 localhost ip6-localhost",
      "::1 six-first.test",
      "127.0.0.1 six-first.test",
      "127.0.0.1 four-first.test",
      "::1 four-first.test",
      "::1 many.test",
      "127.0.0.1 many.test",
      "127.0.0.2 many.test",
      "127.0.0.3 many.test",
      "127.0.0.4 many.test",
      "" }, "\n"))
    -- The namespace trick itself must work, or every case below would prove nothing.
    assert.matches("::1", helper.capture(("unshare -m sh -c %s"):format(
      q(("mount --bind %s /etc/hosts && getent ahosts six-first.test"):format(q(hosts))))))
  end)

  teardown(function() os.remove(hosts) end)

  it("reaches a server on IPv4 only when the name gives IPv6 first (localhost on Debian)", function()
    local s = servers("serve", "refuse")
    for _, name in ipairs({ "six-first.test", "localhost" }) do
      local w, out = client(name, s.port)
      assert.equal("ok", w[1], out)
      assert.equal("v4", w[2])
    end
    stop(s)
  end)

  it("reaches a server on IPv6 only when the name gives IPv4 first", function()
    local s = servers("refuse", "serve")
    local w, out = client("four-first.test", s.port)
    assert.equal("ok", w[1], out)
    assert.equal("v6", w[2])
    stop(s)
  end)

  it("prefers the family of the resolver's first answer when both answer", function()
    local s = servers("serve", "serve")
    for _, name in ipairs({ "six-first.test", "four-first.test" }) do
      -- glibc sorts the answer (RFC 6724), so ask it what comes first.
      local first = helper.capture(("unshare -m sh -c %s"):format(q(
        ("mount --bind %s /etc/hosts && getent ahosts %s"):format(q(hosts), name)))):match("^(%S+)")
      assert.equal(first:find(":", 1, true) and "v6" or "v4", client(name, s.port)[2], name)
    end
    stop(s)
  end)

  it("does not wait for an unanswered first address longer than the attempt delay", function()
    local s = servers("serve", "blackhole")
    local w, out = client("six-first.test", s.port, 10)
    assert.equal("ok", w[1], out)
    assert.equal("v4", w[2])
    local took = tonumber(w[3])
    -- The IPv6 SYN gets no answer; the IPv4 attempt starts after 250 ms and wins.
    assert.is_true(took >= 0.2 and took < 2, "took " .. tostring(took) .. " s")
    stop(s)
  end)

  it("starts the next attempt as soon as one fails, while an earlier one is still unanswered", function()
    -- ::1 gets no answer; 127.0.0.1 to .3 refuse at once, one after the other; .4 serves.
    local order = {}
    for addr in helper.capture(("unshare -m sh -c %s"):format(q(("mount --bind %s /etc/hosts"
      .. " && getent ahosts many.test"):format(q(hosts))))):gmatch("(%S+)%s+STREAM") do
      order[#order + 1] = addr
    end
    assert.same({ "::1", "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4" }, order)
    local s = servers("refuse", "blackhole", "127.0.0.4")
    local w, out = client("many.test", s.port, 10)
    assert.equal("ok", w[1], out)
    assert.equal("v4 127.0.0.4", w[2])
    local took = tonumber(w[3])
    -- One attempt delay (250 ms) for the unanswered ::1, then no further wait: a delay per
    -- refused address would make it 1 s.
    assert.is_true(took >= 0.2 and took < 0.6, "took " .. tostring(took) .. " s")
    stop(s)
  end)

  it("reports the last error when every address refuses, and a timeout when none answers", function()
    local s = servers("refuse", "refuse")
    local w = client("six-first.test", s.port)
    assert.same({ "err", "connection refused", "ECONNREFUSED" }, { w[1], w[2], w[3] })
    stop(s)
    s = servers("blackhole", "blackhole")
    w = client("six-first.test", s.port, 1)
    assert.same({ "err", "timeout", "ETIMEDOUT" }, { w[1], w[2], w[3] })
    stop(s)
  end)
end)
