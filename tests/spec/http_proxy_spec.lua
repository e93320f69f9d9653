-- srv.http.proxy(req, res, upstream [, opts]): the request being handled is forwarded to an
-- upstream and its answer streamed back. The proxy and the upstreams (luasrv HTTP apps and
-- scripted raw TCP servers that record the exact bytes they get) run in this process on free
-- ports, served by the loop while a test waits; the clients are independent programs (curl,
-- python3's http.client and raw sockets) run in the background, so the loop keeps serving.
local srv = require "luasrv"
local helper = require "helper"
local tls_helper = require "tls_helper"

local q = helper.shell_quote
local SPEC_FILE = "http_proxy_spec.lua"

-- ---- temporary files, listeners and pool counters of one run() ----------------------------

local upstream = require "upstream_helper"
local stats = upstream.stats

local temps, closers = {}, {}

local function tmp(suffix)
  local path = helper.tmpname(suffix)
  temps[#temps + 1] = path
  return path
end

local function run(fn)
  closers = {}
  return upstream.run(fn, function()
    for i = #closers, 1, -1 do pcall(closers[i]) end
    for _, path in ipairs(temps) do os.remove(path) end
    temps = {}
  end)
end

-- ---- clients: commands run in the background, waited for inside the loop -----------------

-- Runs a shell command (without the sanitizer preload) in the background and waits for it
-- (srv.sleep, so the servers of this process keep serving). Returns exit status, stdout, stderr.
local function sh(cmd, limit)
  local out, err, rc = tmp(".out"), tmp(".err"), tmp(".rc")
  helper.run(("( (%s) </dev/null >%s 2>%s; echo $? >%s.tmp; mv %s.tmp %s ) >/dev/null 2>&1 &")
    :format(cmd, q(out), q(err), q(rc), q(rc), q(rc)))
  local deadline = srv.monotime() + (limit or 40)
  while not helper.read_file(rc) do
    if srv.monotime() > deadline then error("command still running after " .. (limit or 40) .. "s: " .. cmd, 2) end
    srv.sleep(0.01)
  end
  return tonumber(helper.read_file(rc)), helper.read_file(out) or "", helper.read_file(err) or ""
end

-- Parses a response head (status line and fields, CRLF line ends). Returns a record: status,
-- version, fields ({ name, value } as sent), h (lower-case name -> first value), all(name)
-- (every value of the field, in order), head (the raw text).
local function parse_head(text)
  local lines = {}
  for line in (text .. "\r\n"):gmatch("(.-)\r\n") do lines[#lines + 1] = line end
  local version, status = (lines[1] or ""):match("^HTTP/(%d%.%d) (%d%d%d)")
  local r = { version = version, status = tonumber(status), fields = {}, h = {}, head = text }
  for i = 2, #lines do
    local name, value = lines[i]:match("^([^:%s]+):[ \t]*(.-)[ \t]*$")
    if name then
      r.fields[#r.fields + 1] = { name, value }
      r.h[name:lower()] = r.h[name:lower()] or value
    elseif lines[i] ~= "" then
      r.bad_line = lines[i]
    end
  end
  function r.all(name)
    local values = {}
    for _, f in ipairs(r.fields) do
      if f[1]:lower() == name then values[#values + 1] = f[2] end
    end
    return values
  end
  return r
end

-- curl: the last response's head (interim 1xx skipped), its body and curl's exit status.
local function curl(url, args, limit)
  local head, body = tmp(".head"), tmp(".body")
  local rc, _, err = sh(("curl -sS --noproxy '*' --max-time %d -D %s -o %s %s %s"):format(limit or 20,
    q(head), q(body), args or "", q(url)), (limit or 20) + 10)
  local text = helper.read_file(head) or ""
  local last = ""
  for block in text:gmatch("(HTTP/.-)\r\n\r\n") do last = block end
  local r = parse_head(last)
  r.rc, r.body, r.err = rc, helper.read_file(body) or "", err
  return r
end

-- The Python side: raw sockets and http.client, one mode per use, JSON on standard output.
local PY = [[
import hashlib, http.client, json, socket, sys, threading, time

def out(v):
    sys.stdout.write(json.dumps(v))
    sys.stdout.flush()

mode, port = sys.argv[1], int(sys.argv[2])

def conn(timeout=20):
    return http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)

if mode == 'raw':  # sends the bytes of a file, keeps what comes back until the server closes
    data = open(sys.argv[3], 'rb').read()
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    s.sendall(data)
    got, end = [], 'eof'
    while True:
        try:
            d = s.recv(65536)
        except socket.timeout:
            end = 'timeout'
            break
        except ConnectionResetError:
            end = 'reset'
            break
        if not d:
            break
        got.append(d)
    open(sys.argv[4], 'wb').write(b''.join(got))
    out({'end': end})
elif mode == 'get':
    c = conn()
    c.request(sys.argv[3], sys.argv[4])
    r = c.getresponse()
    res = {'status': r.status, 'version': r.version, 'headers': r.getheaders()}
    try:
        res['body'] = r.read().decode('latin-1')
    except http.client.IncompleteRead as e:
        res['error'] = 'IncompleteRead'
        res['partial'] = len(e.partial)
    except Exception as e:
        res['error'] = type(e).__name__
    out(res)
elif mode == 'upload':  # a body sent chunked (an iterator: http.client frames it)
    method, path, n = sys.argv[3], sys.argv[4], int(sys.argv[5])
    def pieces():
        for i in range(n):
            yield (b'%05d' % i) * 20
    c = conn()
    try:
        c.request(method, path, body=pieces(), encode_chunked=True,
                  headers={'Content-Type': 'application/octet-stream'})
        r = c.getresponse()
        out({'status': r.status, 'body': r.read().decode('latin-1')})
    except Exception as e:
        out({'status': 0, 'error': repr(e)})
elif mode == 'big':  # a slow reader: a pause after 1 MiB (announced in a file), then small reads
    path, total, marker = sys.argv[3], int(sys.argv[4]), sys.argv[5]
    c = conn(60)
    c.request('GET', path)
    r = c.getresponse()
    h, n, paused = hashlib.sha256(), 0, False
    while True:
        d = r.read(65536)
        if not d:
            break
        h.update(d)
        n += len(d)
        if n >= 1 << 20 and not paused:
            paused = True
            open(marker, 'w').write(str(n))
            time.sleep(1.5)
        elif n < 4 << 20:
            time.sleep(0.002)
    e = hashlib.sha256()
    block = b'0123456789abcdef' * 65536
    for i in range(total // len(block)):
        e.update(b'%08d' % i + block[8:])
    out({'status': r.status, 'n': n, 'sha': h.hexdigest(), 'expected': e.hexdigest(),
         'te': r.getheader('Transfer-Encoding'), 'cl': r.getheader('Content-Length')})
elif mode == 'many':  # n clients at once, each on its own connection
    n = int(sys.argv[3])
    results = [None] * n
    start = threading.Barrier(n)
    def one(i):
        try:
            start.wait(10)
            c = conn()
            c.request('GET', '/item?i=%d' % i)
            r = c.getresponse()
            results[i] = [r.status, r.read().decode('latin-1')]
        except Exception as e:
            results[i] = [0, repr(e)]
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out(results)
]]

local py_file

local function py(...)
  local words = {}
  for i, a in ipairs({ ... }) do words[i] = q(a) end
  local rc, out, err = sh("python3 " .. q(py_file) .. " " .. table.concat(words, " "))
  assert(rc == 0, "python3 failed (" .. tostring(rc) .. "): " .. out .. err)
  local value = srv.json.decode(out)
  assert(value ~= nil, "python3 printed no JSON: " .. out .. err)
  return value
end

-- A raw exchange over a socket: the bytes sent, everything received until the server closed,
-- and how it ended ("eof", "reset" or "timeout").
local function raw(port, bytes)
  local req, out = tmp(".req"), tmp(".resp")
  helper.write_file(req, bytes)
  local r = py("raw", port, req, out)
  return helper.read_file(out) or "", r["end"]
end

-- Splits one response off raw bytes: the parsed head and the rest (after the blank line).
local function split_response(bytes)
  local e = bytes:find("\r\n\r\n", 1, true)
  if not e then return nil, bytes end
  return parse_head(bytes:sub(1, e - 1)), bytes:sub(e + 4)
end

-- Decodes a chunked body strictly: the body and what follows the last chunk, or nil and why.
local function dechunk(s)
  local parts, pos = {}, 1
  while true do
    local hex, after = s:match("^(%x+)\r\n()", pos)
    if not hex then return nil, "bad chunk size line at byte " .. pos .. ": " .. ("%q"):format(s:sub(pos, pos + 20)) end
    local n = tonumber(hex, 16)
    pos = after
    if n == 0 then
      if s:sub(pos, pos + 1) ~= "\r\n" then return nil, "no CRLF after the last chunk" end
      return table.concat(parts), s:sub(pos + 2)
    end
    local data = s:sub(pos, pos + n - 1)
    if #data ~= n or s:sub(pos + n, pos + n + 1) ~= "\r\n" then return nil, "chunk cut short" end
    parts[#parts + 1] = data
    pos = pos + n + 2
  end
end

-- ---- servers -------------------------------------------------------------------------------

local function base_url(listener, scheme)
  local _, port = listener:address()
  return (scheme or "http") .. "://127.0.0.1:" .. port, port
end

local function http_listen(opts, handler)
  local l = srv.http.listen(opts, handler)
  closers[#closers + 1] = function() l:close() end
  local url, port = base_url(l)
  return { listener = l, url = url, port = port }
end

-- Every value of the field `name` (lower case) in a recorded request.
local function values(req, name)
  local list = {}
  for _, f in ipairs(req.fields) do
    if f[1]:lower() == name then list[#list + 1] = f[2] end
  end
  return list
end

-- A scripted upstream (upstream_helper.raw_server), closed at the end of the run.
local function raw_server(answer)
  local rec = upstream.raw_server(answer, 10)
  closers[#closers + 1] = function() rec.listener:close() end
  return rec
end

-- Answers every request with a short body (kept alive).
local function ok_server(text)
  return raw_server(function(req, conn)
    local body = (text or "ok") .. " " .. req.method .. " " .. req.target
    conn:write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ", #body, "\r\n\r\n", body)
  end)
end

-- A proxy: each request goes to conf.up with conf.opts. A failure is answered 502 with the
-- code in X-Proxy-Code, the message as the body and the call's duration in X-Proxy-Time; an
-- error raised by the call is kept in conf.raised (and raised on, as without the pcall).
local function proxy_listener(conf, lopts)
  lopts = lopts or {}
  lopts.port = 0
  return http_listen(lopts, function(req, res)
    local t0 = srv.monotime()
    local ok, done, err, code = pcall(srv.http.proxy, req, res, conf.up, conf.opts)
    if not ok then
      conf.raised = done
      error(done, 0)
    end
    if done ~= true then
      conf.failures = (conf.failures or 0) + 1
      res:status(502):header("X-Proxy-Code", tostring(code))
        :header("X-Proxy-Time", ("%.3f"):format(srv.monotime() - t0)):send(tostring(err))
    end
  end)
end

local function closed_port()
  local l = srv.tcp.listen({ port = 0 }, function() end)
  local _, port = l:address()
  l:close()
  return port
end

-- ---- the specs -----------------------------------------------------------------------------

describe("srv.http.proxy", function()
  local ca
  setup(function()
    py_file = helper.tmpname(".py")
    helper.write_file(py_file, PY)
    ca = tls_helper.new_ca()
  end)
  teardown(function()
    os.remove(py_file)
    ca.cleanup()
  end)

  it("relays a GET: status, body, repeated Set-Cookie, one Date and one Server, lengths kept", function()
    run(function()
      local app = srv.http.app()
      app:get("/page", function(_, res)
        res:header("X-Custom", "custom value"):header("Set-Cookie", "a=1; Path=/")
          :header("Set-Cookie", "b=2; HttpOnly"):header("Content-Type", "text/plain; charset=utf-8")
        return 201, "hello through the proxy"
      end)
      local up = http_listen({ port = 0 }, app)
      local conf = { up = up.url }
      local px = proxy_listener(conf)

      local r = curl(px.url .. "/page")
      assert.equal(0, r.rc, r.err)
      assert.is_nil(r.bad_line)
      assert.equal(201, r.status)
      assert.equal("hello through the proxy", r.body)
      assert.same({ "custom value" }, r.all("x-custom"))
      assert.same({ "a=1; Path=/", "b=2; HttpOnly" }, r.all("set-cookie"))
      assert.same({ "text/plain; charset=utf-8" }, r.all("content-type"))
      assert.same({ "23" }, r.all("content-length"))
      assert.same({}, r.all("transfer-encoding"))
      assert.same({ "luasrv" }, r.all("server"))
      assert.equal(1, #r.all("date"))
      r = curl(px.url .. "/missing")
      assert.equal(404, r.status)
      assert.equal(1, #r.all("server"))

      -- An upstream with its own Date and Server, hop-by-hop fields and no Content-Type.
      local raw_up = raw_server(function(_, conn)
        conn:write("HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nServer: upstream/1.0\r\n",
          "Connection: keep-alive, X-Hop\r\nX-Hop: hop value\r\nKeep-Alive: timeout=5\r\n",
          "Set-Cookie: c=3\r\nX-End: end value\r\nSet-Cookie: d=4\r\nContent-Length: 9\r\n\r\nraw body!")
      end)
      conf.up = raw_up.url
      r = curl(px.url .. "/raw")
      assert.equal(0, r.rc, r.err)
      assert.equal(200, r.status)
      assert.equal("raw body!", r.body)
      assert.same({ "luasrv" }, r.all("server"))
      assert.equal(1, #r.all("date"))
      assert.not_equal("Mon, 01 Jan 2001 00:00:00 GMT", r.h.date)
      assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", r.h.date)
      assert.same({}, r.all("content-type"), "no default Content-Type is added")
      assert.same({ "9" }, r.all("content-length"))
      assert.same({ "c=3", "d=4" }, r.all("set-cookie"))
      assert.same({ "end value" }, r.all("x-end"))
      assert.same({}, r.all("x-hop"), "a field named in the upstream's Connection is dropped")
      assert.same({}, r.all("keep-alive"))
      for _, v in ipairs(r.all("connection")) do assert.not_matches("[Hh]op", v) end
      assert.equal(1, raw_up.requests)
    end)
  end)

  it("forwards the request: hop-by-hop fields removed, Host, X-Forwarded-For, opts.headers, target", function()
    run(function()
      local up = ok_server()
      local conf = { up = up.url, opts = { forwarded_for = true, headers = {
        ["x-added"] = "new", ["X-REPLACED"] = "mine", ["X-Removed"] = false,
        ["X-List"] = { "l1", "l2" }, ["X-Num"] = 42 } } }
      local px = proxy_listener(conf)
      local hop = "-H 'Connection: keep-alive, X-Secret' -H 'X-Secret: s' -H 'Keep-Alive: timeout=5' " ..
        "-H 'Proxy-Connection: keep-alive' -H 'TE: trailers' -H 'Trailer: X-T' -H 'Upgrade: foo/1' "
      local r = curl(px.url .. "/a%2Fb/c?x=1&y=%20z", "-X PATCH " .. hop ..
        "-H 'X-Forwarded-For: 1.2.3.4' -H 'x-replaced: theirs' -H 'X-REMOVED: gone' -H 'X-Kept: kept' " ..
        "-H 'Host: front.example:8080' -H 'User-Agent: proxy-spec'")
      assert.equal(0, r.rc, r.err)
      assert.equal(200, r.status)
      assert.equal("ok PATCH /a%2Fb/c?x=1&y=%20z", r.body)
      local seen = assert(up.last)
      assert.equal("PATCH /a%2Fb/c?x=1&y=%20z HTTP/1.1", seen.line)
      for _, name in ipairs({ "connection", "x-secret", "keep-alive", "proxy-connection", "te", "trailer",
        "upgrade", "content-length", "transfer-encoding", "expect" }) do
        assert.same({}, values(seen, name), name .. " must not be forwarded")
      end
      assert.same({ up.url:match("//(.*)") }, values(seen, "host"))
      assert.same({ "1.2.3.4, 127.0.0.1" }, values(seen, "x-forwarded-for"))
      assert.same({ "mine" }, values(seen, "x-replaced"))
      assert.same({}, values(seen, "x-removed"))
      assert.same({ "new" }, values(seen, "x-added"))
      assert.same({ "l1", "l2" }, values(seen, "x-list"))
      assert.same({ "42" }, values(seen, "x-num"))
      assert.same({ "kept" }, values(seen, "x-kept"))
      assert.same({ "proxy-spec" }, values(seen, "user-agent"))

      -- preserve_host; X-Forwarded-For made when the client sent none; passed as it is without
      -- forwarded_for.
      conf.opts = { preserve_host = true, forwarded_for = true }
      r = curl(px.url .. "/h", "-H 'Host: front.example:8080'")
      assert.equal(200, r.status)
      assert.same({ "front.example:8080" }, values(up.last, "host"))
      assert.same({ "127.0.0.1" }, values(up.last, "x-forwarded-for"))
      conf.opts = nil
      r = curl(px.url .. "/h2", "-H 'X-Forwarded-For: 1.2.3.4'")
      assert.equal(200, r.status)
      assert.same({ up.url:match("//(.*)") }, values(up.last, "host"))
      assert.same({ "1.2.3.4" }, values(up.last, "x-forwarded-for"))
      -- The headers option wins over forwarded_for: one field, the caller's.
      conf.opts = { forwarded_for = true, headers = { ["X-Forwarded-For"] = "set" } }
      r = curl(px.url .. "/h3", "-H 'X-Forwarded-For: 1.2.3.4'")
      assert.equal(200, r.status)
      assert.same({ "set" }, values(up.last, "x-forwarded-for"))
      conf.opts = nil

      -- An upstream with a path prefix.
      conf.up = up.url .. "/api"
      r = curl(px.url .. "/a%2Fb/c?x=1", "-X DELETE")
      assert.equal("ok DELETE /api/a%2Fb/c?x=1", r.body)
      assert.equal("DELETE /api/a%2Fb/c?x=1 HTTP/1.1", up.last.line)
      r = curl(px.url .. "/")
      assert.equal("ok GET /api/", r.body)
      assert.equal("GET /api/ HTTP/1.1", up.last.line)
      assert.equal(6, up.requests)
    end)
  end)

  it("sends a request body (Content-Length or chunked from the client) whole with Content-Length", function()
    run(function()
      local up = raw_server(function(req, conn)
        local body = ("%s %d"):format(req.method, #req.body)
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: ", #body, "\r\n\r\n", body)
      end)
      local conf = { up = up.url }
      local px = proxy_listener(conf, { max_body = 300000 })
      local pieces = {}
      for i = 1, 20000 do pieces[i] = ("%09d\n"):format(i * 7919) end
      local data = table.concat(pieces) -- 200000 bytes
      local file = tmp(".data")
      helper.write_file(file, data)
      local r = curl(px.url .. "/upload?k=v", "-X POST --data-binary @" .. q(file) ..
        " -H 'Content-Type: application/octet-stream' -H 'Expect: 100-continue'")
      assert.equal(0, r.rc, r.err)
      assert.equal(200, r.status)
      assert.equal("POST 200000", r.body)
      local seen = up.last
      assert.equal("POST /upload?k=v HTTP/1.1", seen.line)
      assert.same({ "200000" }, values(seen, "content-length"))
      assert.same({}, values(seen, "transfer-encoding"))
      assert.same({}, values(seen, "expect"))
      assert.same({ "application/octet-stream" }, values(seen, "content-type"))
      assert.is_true(seen.body == data, "the upstream got the body as sent")

      -- Chunked from the client (Python's http.client, an iterator body).
      local out = py("upload", px.port, "PUT", "/put", 300)
      assert.equal(200, out.status, out.error)
      assert.equal("PUT 30000", out.body)
      seen = up.last
      assert.equal("PUT /put HTTP/1.1", seen.line)
      assert.same({ "30000" }, values(seen, "content-length"))
      assert.same({}, values(seen, "transfer-encoding"))
      assert.is_nil(seen.chunked)
      local want = {}
      for i = 0, 299 do want[#want + 1] = string.rep(("%05d"):format(i), 20) end
      assert.is_true(seen.body == table.concat(want), "the chunked body arrived whole")
      assert.equal(2, up.requests)
    end)
  end)

  it("answers 413 to a body over the listener's max_body, by Content-Length or chunked", function()
    run(function()
      local up = ok_server()
      local conf = { up = up.url }
      local px = proxy_listener(conf, { max_body = 1000 })
      local file = tmp(".data")
      helper.write_file(file, string.rep("x", 2000))
      local r = curl(px.url .. "/big", "-X POST --data-binary @" .. q(file))
      assert.equal(413, r.status)
      local out = py("upload", px.port, "POST", "/big-chunked", 20) -- 2000 bytes, chunked
      assert.equal(413, out.status, out.error)
      assert.equal(0, up.requests, "nothing reached the upstream")
      -- The proxy serves on, and its pool holds no connection taken for the refused requests.
      r = curl(px.url .. "/small", "-X POST --data-binary small")
      assert.equal(200, r.status)
      assert.equal("ok POST /small", r.body)
      assert.equal(0, stats().active, "no pooled connection left in use after the 413s")
    end)
  end)

  it("frames the answer: chunked to HTTP/1.1, close-delimited to HTTP/1.0, none for HEAD, 204, 304", function()
    run(function()
      local app = srv.http.app()
      app:get("/chunked", function(_, res)
        res:header("Content-Type", "text/plain")
        res:write("alpha,")
        srv.sleep(0.02)
        res:write("beta,")
        res:write("gamma")
      end)
      app:get("/len", function() return "fixed body" end)
      app:get("/nocontent", function(_, res) res:status(204):send("") end)
      app:get("/notmod", function(_, res) res:status(304):header("ETag", '"v1"'):send("") end)
      local up = http_listen({ port = 0 }, app)
      local hints = raw_server(function(_, conn)
        conn:write("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
          "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
      end)
      local conf = { up = up.url }
      local px = proxy_listener(conf)

      -- HTTP/1.1: chunked, whole.
      local bytes, ended = raw(px.port, "GET /chunked HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
      assert.equal("eof", ended)
      local head, rest = split_response(bytes)
      assert.equal(200, head.status)
      assert.same({ "chunked" }, head.all("transfer-encoding"))
      assert.same({}, head.all("content-length"))
      assert.same({ "text/plain" }, head.all("content-type"))
      local body, after = dechunk(rest)
      assert.equal("alpha,beta,gamma", body, after)
      assert.equal("", after)

      -- HTTP/1.0: the body until the close, no chunking.
      bytes, ended = raw(px.port, "GET /chunked HTTP/1.0\r\nHost: p\r\n\r\n")
      assert.equal("eof", ended)
      head, rest = split_response(bytes)
      assert.equal(200, head.status)
      assert.same({}, head.all("transfer-encoding"))
      assert.same({}, head.all("content-length"))
      assert.equal("alpha,beta,gamma", rest)
      bytes = raw(px.port, "GET /len HTTP/1.0\r\nHost: p\r\n\r\n")
      head, rest = split_response(bytes)
      assert.same({ "10" }, head.all("content-length"))
      assert.equal("fixed body", rest)

      -- Pipelined on one connection: HEAD (sized and chunked), 204 and 304 carry no body, so
      -- each head is followed at once by the next status line.
      bytes, ended = raw(px.port, "HEAD /len HTTP/1.1\r\nHost: p\r\n\r\n" ..
        "HEAD /chunked HTTP/1.1\r\nHost: p\r\n\r\n" ..
        "GET /nocontent HTTP/1.1\r\nHost: p\r\n\r\n" ..
        "GET /notmod HTTP/1.1\r\nHost: p\r\n\r\n" ..
        "GET /len HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
      assert.equal("eof", ended)
      local heads = {}
      rest = bytes
      for i = 1, 5 do
        heads[i], rest = split_response(rest)
        assert.is_not_nil(heads[i], "response " .. i .. " in " .. ("%q"):format(bytes))
        if i < 5 then
          assert.matches("^HTTP/1%.1 %d%d%d ", rest, nil, "response " .. i .. " has bytes after its head: " ..
            ("%q"):format(rest:sub(1, 80)))
        end
      end
      assert.equal(200, heads[1].status)
      assert.same({ "10" }, heads[1].all("content-length"))
      assert.equal(200, heads[2].status)
      assert.equal(204, heads[3].status)
      assert.same({}, heads[3].all("transfer-encoding"))
      assert.same({}, heads[3].all("content-length"))
      assert.equal(304, heads[4].status)
      assert.same({}, heads[4].all("transfer-encoding"))
      assert.same({ '"v1"' }, heads[4].all("etag"))
      assert.equal(200, heads[5].status)
      assert.equal("fixed body", rest)

      -- 1xx interim answers of the upstream are skipped.
      conf.up = hints.url
      bytes = raw(px.port, "GET /hints HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
      head, rest = split_response(bytes)
      assert.equal(200, head.status, bytes)
      assert.same({}, head.all("link"))
      assert.equal("final", rest)
    end)
  end)

  it("streams a 32 MiB answer to a slow reader intact, holding the upstream back", function()
    run(function()
      local total, block = 32 * 2 ^ 20, string.rep("0123456789abcdef", 65536)
      local up_state = { written = 0 }
      local app = srv.http.app()
      app:get("/big", function(_, res)
        res:header("Content-Type", "application/octet-stream")
        for i = 0, total // #block - 1 do
          assert(res:write(("%08d"):format(i), block:sub(9)))
          up_state.written = up_state.written + #block
        end
        up_state.done = true
      end)
      local up = http_listen({ port = 0 }, app)
      local px = proxy_listener({ up = up.url })
      local marker = tmp(".marker")
      local result
      local job = helper.spawn(function() result = py("big", px.port, "/big", math.tointeger(total), marker) end)
      local deadline = srv.monotime() + 20
      while not helper.read_file(marker) and not job.done and srv.monotime() < deadline do srv.sleep(0.02) end
      assert.is_truthy(helper.read_file(marker), "the client did not get its first MiB")
      srv.sleep(0.7) -- the client reads nothing meanwhile
      local written_in_pause = up_state.written
      deadline = srv.monotime() + 40
      while not job.done and srv.monotime() < deadline do srv.sleep(0.02) end
      assert.is_true(job.done, "the client did not finish")
      assert(job.ok, job.err)
      assert.equal(200, result.status)
      assert.equal(math.tointeger(total), result.n)
      assert.equal(result.expected, result.sha)
      assert.equal("chunked", result.te)
      assert.is_true(up_state.done)
      assert.is_true(written_in_pause < total, ("while the client paused the upstream had written %d of %d bytes")
        :format(written_in_pause, total))
    end)
  end)

  it("returns refused, timeout, malformed and closed answers; raises and aborts on a cut body", function()
    run(function()
      local good = ok_server("good")
      local conf = {}
      local px = proxy_listener(conf)
      local function still_serving()
        conf.up, conf.opts, conf.raised = good.url, nil, nil
        local r = curl(px.url .. "/next")
        assert.equal(200, r.status)
        assert.equal("good GET /next", r.body)
      end

      conf.up = "http://127.0.0.1:" .. closed_port()
      local r = curl(px.url .. "/refused")
      assert.equal(502, r.status)
      assert.equal("ECONNREFUSED", r.h["x-proxy-code"])
      assert.is_true(#r.body > 0)
      still_serving()

      local silent = srv.tcp.listen({ port = 0 }, function(conn) conn:settimeout(10) conn:read("a") end)
      closers[#closers + 1] = function() silent:close() end
      conf.up = base_url(silent)
      conf.opts = { timeout = 0.2 }
      r = curl(px.url .. "/slow")
      assert.equal(502, r.status)
      assert.equal("ETIMEDOUT", r.h["x-proxy-code"])
      assert.equal("timeout", r.body)
      local took = tonumber(r.h["x-proxy-time"])
      assert.is_true(took >= 0.15 and took < 2, "the timeout took " .. tostring(took) .. " s")
      still_serving()

      for _, answer in ipairs({ "HTTP/1.1 abc\r\n\r\n", "garbage\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 0\r\n\r\n" }) do
        local bad = raw_server(function(_, conn) conn:write(answer) return false end)
        conf.up = bad.url
        r = curl(px.url .. "/malformed")
        assert.equal(502, r.status, answer)
        assert.equal("EPROTO", r.h["x-proxy-code"], answer)
        assert.matches("^bad response: ", r.body)
        assert.equal(1, bad.requests)
        still_serving()
      end

      local mute = raw_server(function() return false end) -- reads the request, closes
      conf.up = mute.url
      r = curl(px.url .. "/closed")
      assert.equal(502, r.status)
      assert.equal("EOF", r.h["x-proxy-code"])
      assert.equal("closed", r.body)
      assert.equal(1, mute.requests)
      assert.is_nil(conf.raised)
      still_serving()

      -- The head is out, then the upstream closes in the middle of a Content-Length body: the
      -- call raises and the client sees a short body (curl: exit 18; Python: IncompleteRead).
      local half = raw_server(function(_, conn)
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", string.rep("h", 500))
        srv.sleep(0.1)
        return false
      end)
      conf.up = half.url
      r = curl(px.url .. "/half")
      assert.equal(18, r.rc, "curl's exit status for a partial body: " .. r.err)
      assert.equal(200, r.status)
      assert.is_true(#r.body < 1000)
      assert.is_string(conf.raised, "the call raised")
      still_serving()
      conf.up = half.url
      local out = py("get", px.port, "GET", "/half")
      assert.equal(200, out.status)
      assert.equal("IncompleteRead", out.error, out.body and ("got a whole body of " .. #out.body))
      assert.equal(500, out.partial)
      still_serving()

      -- The same with a chunked answer cut short: the client's chunked body never ends.
      local cut = raw_server(function(_, conn)
        conn:write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        srv.sleep(0.1)
        return false
      end)
      conf.up = cut.url
      r = curl(px.url .. "/cut")
      assert.equal(18, r.rc, "curl's exit status for an unfinished chunked body: " .. r.err)
      assert.equal("hello", r.body)
      assert.is_string(conf.raised, "the call raised")
      local bytes = raw(px.port, "GET /cut HTTP/1.1\r\nHost: p\r\n\r\n")
      local head, rest = split_response(bytes)
      assert.equal(200, head.status)
      assert.is_nil(dechunk(rest), "the chunked body must not look complete: " .. ("%q"):format(rest))
      still_serving()
    end)
  end)

  it("keeps one upstream connection for 20 sequential requests", function()
    run(function()
      local up = ok_server()
      local px = proxy_listener({ up = up.url })
      for i = 1, 20 do
        local r = curl(px.url .. "/seq/" .. i)
        assert.equal(200, r.status)
        assert.equal("ok GET /seq/" .. i, r.body)
      end
      assert.equal(20, up.requests)
      assert.equal(1, up.conns, "one upstream connection for 20 requests")
      local s = stats()
      assert.equal(1, s.created)
      assert.equal(19, s.reused)
      assert.equal(1, s.idle)
      assert.equal(0, s.active)
    end)
  end)

  it("takes a new connection when the upstream's keep-alive timeout closed the pooled one", function()
    run(function()
      local app = srv.http.app()
      local served = 0
      app:get("/ka", function() served = served + 1 return "fresh " .. served end)
      local short = http_listen({ port = 0, keepalive_timeout = 0.2 }, app)
      local px = proxy_listener({ up = short.url })
      local r = curl(px.url .. "/ka")
      assert.equal("fresh 1", r.body)
      local before = stats()
      assert.equal(1, before.idle)
      srv.sleep(0.6) -- the upstream closes the idle connection after 0.2 s
      r = curl(px.url .. "/ka")
      assert.equal(200, r.status, r.body)
      assert.equal("fresh 2", r.body)
      local after = stats()
      -- The upstream's close reached the idle connection: it is dropped when taken, and the
      -- request goes out once, on a new connection (no failed attempt, no retry).
      assert.equal(before.created + 1, after.created)
      assert.equal(before.closed_idle + 1, after.closed_idle)
      assert.equal(before.retried, after.retried)
      assert.equal(before.reused, after.reused)
    end)
  end)

  it("retries an idempotent request once when a reused connection closes unanswered, not a POST", function()
    run(function()
      -- Answers the first request of each connection; at the second it closes without a word.
      local flaky = raw_server(function(req, conn, n)
        if n > 1 then return false end
        local body = ("answer %s %d"):format(req.method, #req.body)
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: ", #body, "\r\n\r\n", body)
      end)
      local px = proxy_listener({ up = flaky.url })
      local r = curl(px.url .. "/one")
      assert.equal("answer GET 0", r.body)
      r = curl(px.url .. "/two")
      assert.equal(200, r.status, r.body)
      assert.equal("answer GET 0", r.body)
      assert.equal(1, stats().retried)
      assert.equal(2, flaky.conns)
      -- A PUT is sent again with its body.
      r = curl(px.url .. "/three", "-X PUT --data-binary data")
      assert.equal(200, r.status, r.body)
      assert.equal("answer PUT 4", r.body)
      assert.equal("data", flaky.last.body)
      assert.equal(2, stats().retried)
      assert.equal(3, flaky.conns)
      -- A POST is not: the handler gets the failure.
      r = curl(px.url .. "/four", "-X POST --data-binary data")
      assert.equal(502, r.status, r.body)
      assert.equal(2, stats().retried)
      assert.equal(3, flaky.conns)
      local s = stats()
      assert.equal(0, s.active)
      assert.equal(3, s.created)
    end)
  end)

  it("serves 100 concurrent requests through the pool", function()
    run(function()
      local app = srv.http.app()
      local inflight, peak, seen = 0, 0, {}
      app:get("/item", function(req)
        inflight = inflight + 1
        if inflight > peak then peak = inflight end
        srv.sleep(0.2)
        inflight = inflight - 1
        seen[#seen + 1] = req.query.i
        return "item " .. req.query.i
      end)
      local up = http_listen({ port = 0 }, app)
      local px = proxy_listener({ up = up.url })
      local results = py("many", px.port, 100)
      assert.equal(100, #results)
      for i = 1, 100 do
        assert.same({ 200, "item " .. (i - 1) }, results[i])
      end
      assert.equal(100, #seen)
      local distinct = {}
      for _, i in ipairs(seen) do distinct[i] = true end
      local n = 0
      for _ in pairs(distinct) do n = n + 1 end
      assert.equal(100, n)
      assert.is_true(peak >= 20, "the upstream saw at most " .. peak .. " requests at once")
      local s = stats()
      assert.equal(0, s.active)
      assert.is_true(s.created >= peak and s.created <= 100, "created " .. s.created)
    end)
  end)

  it("relays from an HTTPS upstream verified with a test CA, and fails without the CA", function()
    run(function()
      local cert, key = ca.issue("upstream")
      local l = srv.http.listen({ port = 0, tls = { cert = cert, key = key } }, function(req)
        return "secure " .. req.scheme .. " " .. req.headers.host
      end)
      closers[#closers + 1] = function() l:close() end
      local _, port = l:address()
      local conf = { up = "https://localhost:" .. port, opts = { tls = { ca = ca.pem } } }
      local px = proxy_listener(conf)
      local r = curl(px.url .. "/")
      assert.equal(0, r.rc, r.err)
      assert.equal(200, r.status)
      assert.equal("secure https localhost:" .. port, r.body)
      r = curl(px.url .. "/again")
      assert.equal("secure https localhost:" .. port, r.body)
      local s = stats()
      assert.equal(1, s.created)
      assert.equal(1, s.reused)
      conf.opts = nil
      r = curl(px.url .. "/")
      assert.equal(502, r.status)
      assert.equal("ETLS", r.h["x-proxy-code"])
      assert.matches("certificate", r.body)
    end)
  end)

  it("raises on misuse, at the caller's line", function()
    run(function()
      local up = ok_server()
      local results, line = {}, nil
      local function here() return debug.getinfo(2, "l").currentline end
      local function try(name, f)
        local ok, err = pcall(f)
        results[name] = { ok = ok, err = tostring(err), line = line }
      end
      local url = up.url
      local px = http_listen({ port = 0 }, function(req, res)
        if req.path == "/misuse" then
          try("scheme", function() line = here() srv.http.proxy(req, res, "ftp://127.0.0.1:1/") end)
          try("number", function() line = here() srv.http.proxy(req, res, 42) end)
          try("userinfo", function() line = here() srv.http.proxy(req, res, "http://u:p@127.0.0.1:1") end)
          try("query", function() line = here() srv.http.proxy(req, res, "http://127.0.0.1:1/?q=1") end)
          try("opts", function() line = here() srv.http.proxy(req, res, url, "fast") end)
          try("value", function() line = here() srv.http.proxy(req, res, url, { headers = { X = "a\r\nb" } }) end)
          try("name", function() line = here() srv.http.proxy(req, res, url, { headers = { ["A B"] = "v" } }) end)
          return "checked"
        end
        res:send("sent first")
        try("sent", function() line = here() srv.http.proxy(req, res, url) end)
      end)
      local r = assert(srv.http.get(px.url .. "/misuse"))
      assert.equal("checked", r.body)
      r = assert(srv.http.get(px.url .. "/after-send"))
      assert.equal("sent first", r.body)
      local problems = {}
      for _, name in ipairs({ "scheme", "number", "userinfo", "query", "opts", "value", "name", "sent" }) do
        local got = results[name]
        if not got then
          problems[#problems + 1] = name .. ": not tried"
        elseif got.ok then
          problems[#problems + 1] = name .. ": did not raise"
        elseif not got.err:find(SPEC_FILE .. ":" .. got.line .. ":", 1, true) then
          problems[#problems + 1] = ("%s: the message does not name the caller's line %d: %s"):format(name,
            got.line, got.err)
        end
      end
      if results.sent and not results.sent.err:find("already", 1, true) then
        problems[#problems + 1] = "sent: unexpected message: " .. results.sent.err
      end
      if up.requests ~= 0 then problems[#problems + 1] = "a request with a bad header reached the upstream" end
      local active = stats().active
      if active ~= 0 then
        problems[#problems + 1] = active .. " pooled connection(s) left in use after the calls that raised"
      end
      assert.same({}, problems)
    end)
  end)
end)
