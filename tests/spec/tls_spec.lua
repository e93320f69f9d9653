-- TLS (DESIGN §5): HTTPS and TLS TCP listeners, TLS clients with verification, STARTTLS,
-- SNI, handshake timeouts, certificate reloads, sendfile over TLS, bounded cost per
-- connection. Certificates are made by the openssl command at test time (tls_helper). The
-- independent peers are curl and Python's ssl module.
local srv = require "luasrv"
local helper = require "helper"
local C = require "conformance"
local T = require "tls_helper"

local q = helper.shell_quote

local ca, server, https_port, full_port, tls_port, plain_port

-- The listeners of tls_app.lua: HTTPS, HTTPS without resumption, TLS TCP, plain TCP.
local function ports_of(s)
  full_port = tonumber(s.urls[2]:match(":(%d+)$"))
  tls_port = tonumber(s.urls[3]:match(":(%d+)$"))
  plain_port = tonumber(s.urls[4]:match(":(%d+)$"))
end

local function start(which)
  server = helper.start(C.fixture("tls_app.lua"), { args = { ca.dir, https_port, which },
                                                     listeners = 4 })
  ports_of(server)
end

local function connect(port, tls, timeout)
  return srv.tcp.connect("127.0.0.1", port, { tls = tls, timeout = timeout or 5 })
end

-- Runs python3 code (the independent client or server) and returns its output.
local function python(code)
  return helper.capture("python3 -c " .. q(code) .. " 2>&1")
end

describe("TLS", function()
  setup(function()
    ca = T.new_ca()
    ca.issue("srv")
    ca.issue("srv2", { org = "second" })
    ca.issue("b", { cn = "b.test", san = "DNS:b.test" })
    ca.issue("expired", { days = 0 })
    ca.issue("self", { self_signed = true })
    helper.run(("head -c 3000000 /dev/urandom > %s/big.bin"):format(q(ca.dir)))
    https_port = helper.free_tcp_ports(1)[1]
    start("srv")
  end)

  teardown(function()
    if server then
      local status = C.stop_within(server, "TERM", 10)
      local err = server:stderr()
      server:cleanup()
      assert.falsy(err:find("Sanitizer", 1, true), err)
      assert.equal(0, status, err)
    end
    ca.cleanup()
  end)

  after_each(function()
    if server.status == nil then
      assert.is_true(server:alive(), "the server died:\n" .. server:stderr())
    end
  end)

  describe("HTTPS", function()
    it("answers curl with a certificate the test made, as https, ALPN http/1.1", function()
      local out = helper.capture(("curl -s --cacert %s https://localhost:%d/"):format(q(ca.pem),
        https_port))
      local t = require("cjson").decode(out)
      assert.equal("https", t.scheme)
      assert.equal("http/1.1", t.alpn)
      assert.equal("localhost", t.server_name)
      assert.matches("^TLSv1%.[23]$", t.version)
      -- curl with no CA of ours refuses the certificate
      assert.equal("000", helper.capture(("curl -s -o /dev/null -w '%%{http_code}' " ..
        "https://localhost:%d/"):format(https_port)))
    end)

    it("answers Python's http.client over ssl, with a request body", function()
      local out = python(([[
import http.client, ssl
ctx = ssl.create_default_context(cafile=%q)
c = http.client.HTTPSConnection("localhost", %d, context=ctx)
c.request("POST", "/echo", body=b"x" * 100000)
r = c.getresponse()
b = r.read()
print(r.status, len(b), c.sock.version())
]]):format(ca.pem, https_port))
      assert.matches("^200 100000 TLSv1%.[23]", out)
    end)

    it("resumes sessions unless resumption = false (checked by Python's client)", function()
      local code = [[
import json, socket, ssl
ctx = ssl.create_default_context(cafile=%q)
def get(port, session=None):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost",
                        session=session)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(4096)
        if not d: break
        data += d
    seen = json.loads(data.split(b"\r\n\r\n", 1)[1])["resumed"]
    return s.session, s.session_reused, seen
for port in (%d, %d):
    sess, _, _ = get(port)
    _, reused, seen = get(port, sess)
    print(reused, seen)
]]
      local out = python(code:format(ca.pem, https_port, full_port))
      assert.equal("True True\nFalse False\n", out)
    end)

    it("sends files over TLS (read and write in chunks, no sendfile)", function()
      local want = helper.capture("md5sum < " .. q(ca.dir .. "/big.bin")):match("^%x+")
      local got = helper.capture(("curl -s --cacert %s https://localhost:%d/big | md5sum")
        :format(q(ca.pem), https_port)):match("^%x+")
      assert.equal(want, got)
    end)

    it("closes a plain HTTP request on the TLS port and goes on serving", function()
      srv.run(function()
        local c = assert(connect(https_port))
        c:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        local data = c:read()
        assert.is_nil(data)
        c:close()
      end)
      assert.matches("200", helper.capture(("curl -s -o /dev/null -w '%%{http_code}' --cacert %s " ..
        "https://localhost:%d/"):format(q(ca.pem), https_port)))
    end)
  end)

  describe("TLS TCP", function()
    it("talks to a luasrv client that verifies the chain and the name", function()
      srv.run(function()
        local c = assert(srv.tcp.connect("localhost", tls_port, { tls = { ca = ca.pem }, timeout = 5 }))
        assert.matches("^hello TLSv1%.[23] localhost$", c:readline())
        c:write("abc\n")
        assert.equal("echo:abc", c:readline())
        local info = c:tls()
        assert.equal("/CN=localhost", info.peer_subject)
        c:close()
      end)
    end)

    it("refuses untrusted, wrong-host and expired certificates with clear errors", function()
      srv.run(function()
        local c, err, code = connect(tls_port, true) -- the system store does not know our CA
        assert.is_nil(c)
        assert.equal("tls: certificate verify failed (unable to get local issuer certificate)", err)
        assert.equal("ETLS", code)
        c, err = connect(tls_port, { ca = ca.pem, server_name = "example.com" })
        assert.is_nil(c)
        assert.equal("tls: certificate verify failed (hostname mismatch)", err)
        -- verify = false must be explicit, and then connects
        c = assert(connect(tls_port, { verify = false }))
        assert.matches("^hello", c:readline())
        c:close()
      end)
      -- an expired certificate, served by Python
      local pem, key = ca.dir .. "/expired.pem", ca.dir .. "/expired.key"
      os.execute("sleep 1.1") -- issued with -days 0: expired a second after it was made
      local py = io.popen(helper.clean("python3 -u -c " .. q(([[
import socket, ssl
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(%q, %q)
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
try:
    ctx.wrap_socket(c, server_side=True).recv(10)
except Exception:
    pass
]]):format(pem, key))))
      local port = tonumber(py:read("l"))
      srv.run(function()
        local c, err = srv.tcp.connect("localhost", port, { tls = { ca = ca.pem }, timeout = 5 })
        assert.is_nil(c)
        assert.equal("tls: certificate verify failed (certificate has expired)", err)
      end)
      py:close()
    end)

    it("connects to Python's ssl server and exchanges data", function()
      local py = io.popen(helper.clean("python3 -u -c " .. q(([[
import socket, ssl
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(%q, %q)
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
t = ctx.wrap_socket(c, server_side=True)
data = t.recv(100)
t.sendall(b"py:" + data)
t.unwrap() if False else t.close()
]]):format(ca.dir .. "/srv.pem", ca.dir .. "/srv.key"))))
      local port = tonumber(py:read("l"))
      srv.run(function()
        local c = assert(srv.tcp.connect("localhost", port, { tls = { ca = ca.pem }, timeout = 5 }))
        c:write("ping\n")
        assert.equal("py:ping", c:readline())
        c:close()
      end)
      py:close()
    end)

    it("picks the certificate by SNI", function()
      srv.run(function()
        local c = assert(connect(tls_port, { ca = ca.pem, server_name = "b.test" }))
        assert.equal("/CN=b.test", c:tls().peer_subject)
        assert.matches(" b%.test$", c:readline())
        c:close()
        c = assert(connect(tls_port, { ca = ca.pem, server_name = "localhost" }))
        assert.equal("/CN=localhost", c:tls().peer_subject)
        c:close()
      end)
      -- and Python's client sees the same
      local out = python(([[
import socket, ssl
ctx = ssl.create_default_context(cafile=%q)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", %d)), server_hostname="b.test")
print(s.recv(100).decode().strip())
]]):format(ca.pem, tls_port))
      assert.matches("b%.test", out)
    end)

    it("upgrades a plain connection with starttls", function()
      srv.run(function()
        local c = assert(connect(plain_port))
        c:write("STARTTLS\n")
        assert.equal("GO", c:readline())
        assert.equal(c, assert(c:starttls({ ca = ca.pem, server_name = "localhost" })))
        assert.matches("^secure TLSv1%.[23]$", c:readline())
        c:write("after\n")
        assert.equal("echo:after", c:readline())
        assert.has_error(function() c:starttls() end)
        c:close()
      end)
    end)

    it("ends a client that stalls in the handshake, on both sides", function()
      srv.run(function()
        -- a client that connects and says nothing: closed after the 0.5 s handshake timeout
        local c = assert(connect(tls_port))
        local t0 = srv.monotime()
        local data, err = c:read()
        assert.is_nil(data)
        assert.equal("closed", err)
        assert.is_true(srv.monotime() - t0 < 3)
        c:close()
        -- a server that accepts and says nothing: the connect's timeout ends the handshake
        local mute = srv.tcp.listen({ port = 0 }, function(conn) srv.sleep(5) conn:close() end)
        local _, port = mute:address()
        local ok, err2, code = connect(port, { ca = ca.pem, server_name = "localhost" }, 0.3)
        assert.is_nil(ok)
        assert.equal("tls: handshake timeout", err2)
        assert.equal("ETIMEDOUT", code)
        mute:close()
      end)
    end)

    it("raises at the caller's line for unreadable certificate files", function()
      srv.run(function()
        local ok, err = pcall(function()
          srv.tcp.listen({ port = 0, tls = { cert = "/nonexistent.pem", key = "/nonexistent.key" } },
            function() end)
        end)
        assert.is_false(ok)
        assert.matches("tls_spec%.lua:%d+: tls: cannot load certificate /nonexistent%.pem: No such file", err)
        ok, err = pcall(function()
          srv.http.listen({ port = 0, tls = { cert = ca.dir .. "/srv.pem", key = ca.dir .. "/b.key" } },
            function() end)
        end)
        assert.is_false(ok)
        assert.matches("tls_spec%.lua:%d+: tls: .*b%.key: key values mismatch", err)
        ok, err = pcall(function() srv.tcp.connect("127.0.0.1", 1, { tls = { verify = "no" } }) end)
        assert.is_false(ok)
        assert.matches("tls_spec%.lua:%d+: tls: 'verify' must be true or false", err)
      end)
    end)

    it("keeps memory and file descriptors flat over 1,000 TLS connections", function()
      local function status()
        local fds = tonumber(helper.capture("ls /proc/" .. server.pid .. "/fd | wc -l"))
        local rss = tonumber((helper.read_file("/proc/" .. server.pid .. "/status") or "")
          :match("VmRSS:%s*(%d+)"))
        return fds, rss
      end
      local function batch(n)
        srv.run(function()
          for _ = 1, n do
            local c = assert(connect(tls_port, { ca = ca.pem, server_name = "localhost" }))
            assert(c:readline())
            c:close()
          end
        end)
      end
      batch(200) -- warm up: OpenSSL's caches, the allocator's free lists
      os.execute("sleep 0.3")
      local fds0, rss0 = status()
      batch(1000)
      os.execute("sleep 0.3")
      local fds1, rss1 = status()
      assert.equal(fds0, fds1)
      -- Under AddressSanitizer freed memory sits in its quarantine, so RSS says nothing there;
      -- LeakSanitizer checks the same server for leaks when it stops (teardown).
      if not os.getenv("LUASRV_SANITIZED") then
        assert.is_true(rss1 - rss0 < 4096, ("RSS grew by %d KiB"):format(rss1 - rss0))
      end
    end)
  end)

  describe("reload", function()
    it("serves the new certificate to new connections after a reload", function()
      local function subject()
        return python(([[
import socket, ssl
ctx = ssl.create_default_context(cafile=%q)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", %d)), server_hostname="localhost")
print(dict(x[0] for x in s.getpeercert()["subject"]))
]]):format(ca.pem, https_port))
      end
      assert.falsy(subject():find("second", 1, true))
      -- the fixture reads which certificate to serve from its arguments: restart it with a
      -- script that passes the other one, then SIGHUP (the same process, the same socket)
      local link = ca.dir .. "/which.lua"
      helper.write_file(link, ("arg = { %q, %q, 'srv' }\n"):format(ca.dir, tostring(https_port)) ..
        ("return dofile(%q)\n"):format(C.fixture("tls_app.lua")))
      server:cleanup()
      server = helper.start(link, { listeners = 4 })
      ports_of(server)
      assert.falsy(subject():find("second", 1, true))
      helper.write_file(link, ("arg = { %q, %q, 'srv2' }\n"):format(ca.dir, tostring(https_port)) ..
        ("return dofile(%q)\n"):format(C.fixture("tls_app.lua")))
      os.execute("kill -HUP " .. server.pid)
      local deadline = srv.monotime() + 5
      local got
      repeat
        os.execute("sleep 0.1")
        got = subject()
      until got:find("second", 1, true) or srv.monotime() > deadline
      assert.truthy(got:find("second", 1, true), got .. server:stderr())
    end)
  end)
end)
