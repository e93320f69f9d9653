-- The HTTP client against nginx (Debian's package), started by this spec on a free port with
-- a private configuration: static files with Content-Length, gzip'd chunked answers, HEAD and
-- 304, keep-alive counted in nginx's own access log ($connection), and nginx closing idle
-- connections (the client's retry on a new connection); HTTPS with a certificate from a test
-- CA made here with the openssl command.
local srv = require "luasrv"
local helper = require "helper"
local tls_helper = require "tls_helper"

local function nginx_available()
  return helper.run("command -v nginx >/dev/null 2>&1")
end

describe("srv.http client against nginx", function()
  if not nginx_available() then
    it("needs nginx (scripts/setup installs it)", function() error("nginx is not installed") end)
    return
  end
  local dir, port, tls_port, pid, base, ca
  setup(function()
    dir = helper.tmpname("-nginx")
    helper.run("mkdir -p " .. helper.shell_quote(dir .. "/www"))
    helper.write_file(dir .. "/www/file.txt", string.rep("0123456789", 1000))
    local ports = helper.free_tcp_ports(2)
    port, tls_port = ports[1], ports[2]
    ca = tls_helper.new_ca()
    local cert, key = ca.issue("nginx")
    helper.write_file(dir .. "/nginx.conf", ([[
daemon off; master_process off; worker_processes 1;
pid %s/nginx.pid; error_log %s/error.log warn;
events { worker_connections 256; }
http {
  log_format conns '$connection $connection_requests $request_method $uri $status';
  access_log %s/access.log conns;
  keepalive_timeout 1s;
  client_body_temp_path %s/b; proxy_temp_path %s/p; fastcgi_temp_path %s/f;
  uwsgi_temp_path %s/u; scgi_temp_path %s/s;
  server {
    listen 127.0.0.1:%d;
    root %s/www;
    location /gz/ { alias %s/www/; gzip on; gzip_types text/plain; gzip_min_length 0; }
    location = /echo { return 200 "$request_method $http_x_test\n"; }
    location = /redirect { return 303 /echo; }
    location = /retry { return 200 "retry\n"; }
  }
  server {
    listen 127.0.0.1:%t ssl;
    ssl_certificate %c; ssl_certificate_key %k;
    location / { return 200 "secure $ssl_protocol\n"; }
  }
}
]]):gsub("%%s", dir):gsub("%%d", tostring(port)):gsub("%%t", tostring(tls_port))
      :gsub("%%c", cert):gsub("%%k", key))
    pid = tonumber(helper.capture(("nginx -p %s/ -e %s/error.log -c %s/nginx.conf >/dev/null 2>&1 & echo $!")
      :format(dir, dir, dir)))
    base = "http://127.0.0.1:" .. port
    -- Wait until nginx answers.
    srv.run(function()
      local deadline = srv.monotime() + 10
      while srv.monotime() < deadline do
        local conn = srv.tcp.connect("127.0.0.1", port, { timeout = 1 })
        if conn then conn:close() return end
        srv.sleep(0.05)
      end
      error("nginx did not start: " .. (helper.read_file(dir .. "/error.log") or ""))
    end)
  end)
  teardown(function()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    srv.run(function() srv.http.pool_close() srv.sleep(0.2) end)
    helper.run("rm -rf " .. helper.shell_quote(dir))
    if ca then ca.cleanup() end
  end)

  -- nginx's access log lines: { connection, request on it, method, uri, status }. nginx writes
  -- a request's line after its answer has gone: wait (up to 5 s) for at least `want` lines.
  local read_log
  local function log_lines(want)
    local lines = read_log()
    local deadline = srv.monotime() + 5
    while want and #lines < want and srv.monotime() < deadline do
      srv.sleep(0.02)
      lines = read_log()
    end
    return lines
  end
  function read_log()
    local lines = {}
    for c, n, m, u, s in (helper.read_file(dir .. "/access.log") or ""):gmatch("(%d+) (%d+) (%S+) (%S+) (%d+)\n") do
      lines[#lines + 1] = { conn = c, n = tonumber(n), method = m, uri = u, status = tonumber(s) }
    end
    return lines
  end

  it("reads static files, reuses one connection (counted by nginx), HEAD and 304", function()
    srv.run(function()
      srv.http.pool_close()
      local before = #log_lines()
      local res = assert(srv.http.get(base .. "/file.txt"))
      assert.equal(200, res.status)
      assert.equal(10000, #res.body)
      assert.equal("nginx", res.headers.server:match("^nginx"))
      local etag, modified = res.headers.etag, res.headers["last-modified"]
      res = assert(srv.http.request({ method = "HEAD", url = base .. "/file.txt" }))
      assert.equal("10000", res.headers["content-length"])
      assert.equal("", res.body)
      res = assert(srv.http.get(base .. "/file.txt", { headers = { ["If-None-Match"] = etag,
        ["If-Modified-Since"] = modified } }))
      assert.equal(304, res.status)
      assert.equal("", res.body)
      res = assert(srv.http.get(base .. "/echo", { headers = { ["X-Test"] = "yes" } }))
      assert.equal("GET yes\n", res.body)
      local lines = log_lines(before + 4)
      assert.equal(before + 4, #lines)
      for i = before + 1, before + 4 do
        assert.equal(lines[before + 1].conn, lines[i].conn)
        assert.equal(i - before, lines[i].n)
      end
    end)
  end)

  it("decodes a chunked answer and follows a 303", function()
    srv.run(function()
      local res = assert(srv.http.get(base .. "/gz/file.txt", { headers = { ["Accept-Encoding"] = "gzip" } }))
      assert.equal(200, res.status)
      assert.equal("chunked", res.headers["transfer-encoding"])
      assert.equal("gzip", res.headers["content-encoding"])
      assert.equal("\31\139", res.body:sub(1, 2))
      res = assert(srv.http.post(base .. "/redirect", "data", { redirects = 1 }))
      assert.equal("GET \n", res.body)
    end)
  end)

  it("speaks HTTPS to nginx, verified against the test CA, on a kept-alive connection", function()
    srv.run(function()
      local url = "https://localhost:" .. tls_port .. "/"
      local res, err, code = srv.http.get(url)
      assert.is_nil(res)
      assert.equal("ETLS", code)
      assert.matches("certificate verify failed", err)
      local before = srv.http.pool_stats()
      for _ = 1, 3 do
        res = assert(srv.http.get(url, { tls = { ca = ca.pem } }))
        assert.equal(200, res.status)
        assert.matches("^secure TLSv1%.[23]\n$", res.body)
      end
      local after = srv.http.pool_stats()
      assert.equal(1, after.created - before.created)
      assert.equal(2, after.reused - before.reused)
    end)
  end)

  it("takes a new connection when nginx closed the idle one, sending nothing on the old", function()
    srv.run(function()
      srv.http.pool_close()
      local before = srv.http.pool_stats()
      assert.equal(200, assert(srv.http.get(base .. "/retry")).status)
      srv.sleep(1.5) -- past nginx's keepalive_timeout, within the pool's idle timeout
      assert.equal(200, assert(srv.http.get(base .. "/retry")).status)
      local after = srv.http.pool_stats()
      -- nginx's close reached the idle connection: it is dropped when taken, not tried.
      assert.equal(0, after.retried - before.retried)
      assert.equal(0, after.reused - before.reused)
      assert.equal(1, after.closed_idle - before.closed_idle)
      -- Two connections served /retry, as nginx counts them.
      local function served_retry()
        local list = {}
        for _, l in ipairs(log_lines()) do
          if l.uri == "/retry" then list[#list + 1] = l end
        end
        return list
      end
      local deadline, retries = srv.monotime() + 5, served_retry()
      while #retries < 2 and srv.monotime() < deadline do
        srv.sleep(0.02)
        retries = served_retry()
      end
      assert.equal(2, #retries)
      assert.are_not.equal(retries[1].conn, retries[2].conn)
    end)
  end)
end)
