-- The raw HTTP client example, `luasrv examples/raw_http_get.lua URL [FILE]`, run as a
-- process against small HTTP responders this spec serves in-process.
local srv = require "luasrv"
local helper = require "helper"

local script = helper.path("examples/raw_http_get.lua")

-- Starts `luasrv raw_http_get.lua args...` in the background and returns a function that
-- waits for it without blocking the loop (so a responder in this process can answer it)
-- and returns its exit status, stdout and stderr.
local function spawn(args)
  local out, err, rc = helper.tmpname(".out"), helper.tmpname(".err"), helper.tmpname(".rc")
  local q = helper.shell_quote
  local words = { q(helper.bin), q(script) }
  for _, a in ipairs(args) do words[#words + 1] = q(a) end
  local env = os.getenv("LUASRV_SANITIZED") and "env LD_PRELOAD= " or ""
  os.execute(("(%s%s </dev/null >%s 2>%s; echo $? >%s) >/dev/null 2>&1 &"):format(
    env, table.concat(words, " "), q(out), q(err), q(rc)))
  return function()
    local deadline = srv.monotime() + 20
    local status = tonumber((helper.read_file(rc) or ""):match("^(%d+)\n"))
    while not status do
      assert(srv.monotime() < deadline, "raw_http_get.lua did not finish")
      srv.sleep(0.02)
      status = tonumber((helper.read_file(rc) or ""):match("^(%d+)\n"))
    end
    local o, e = helper.read_file(out), helper.read_file(err)
    os.remove(out); os.remove(err); os.remove(rc)
    return status, o, e
  end
end

-- Runs the example against a responder on 127.0.0.1 (or opts.host) that reads one request
-- head and answers with the pieces of `response`, in separate writes. url is a pattern
-- with %d for the port. Returns status, stdout, stderr, the raw request head and the port.
local function fetch(url, response, args, opts)
  opts = opts or {}
  return srv.run(function()
    local request
    local listener = srv.tcp.listen({ host = opts.host or "127.0.0.1", port = 0 }, function(conn)
      conn:settimeout(5)
      local head = ""
      while not head:find("\r\n\r\n", 1, true) do
        local data = conn:read()
        if not data then break end
        head = head .. data
      end
      request = head
      for _, piece in ipairs(response) do
        conn:write(piece)
        srv.sleep(0.02)
      end
    end)
    local _, port = listener:address()
    local wait = spawn({ url:format(port), table.unpack(args or {}) })
    local status, out, err = wait()
    listener:close()
    return status, out, err, request, port
  end)
end

-- The request line and the headers (lower-cased names) of a raw request head.
local function parse_request(head)
  assert.is_string(head, "the responder got no request")
  assert.equal("\r\n\r\n", head:sub(-4), "the request head must end with a blank line")
  local request_line = head:match("^(.-)\r\n")
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+): ([^\r\n]*)") do headers[name:lower()] = value end
  return request_line, headers
end

describe("examples/raw_http_get.lua", function()
  it("sends a GET with Connection: close, prints the head and saves the body", function()
    local head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Test: yes"
    -- A body with its own blank line and every byte value: only the first \r\n\r\n splits.
    local chars = {}
    for i = 0, 255 do chars[#chars + 1] = string.char(i) end
    local body = "line one\r\n\r\nafter a blank line\n" .. table.concat(chars)
    local file = helper.tmpname(".body")
    local status, out, err, request, port = fetch("http://127.0.0.1:%d/dir/file.txt?x=1&y=a%%20b",
      { head .. "\r\nContent-Length: " .. #body .. "\r\n\r\n", body:sub(1, 10), body:sub(11) },
      { file })
    assert.equal(0, status, err)
    assert.equal("", err)
    local request_line, headers = parse_request(request)
    assert.equal("GET /dir/file.txt?x=1&y=a%20b HTTP/1.1", request_line)
    assert.equal("127.0.0.1:" .. port, headers.host)
    assert.equal("close", headers.connection)
    assert.equal("HTTP/1.1 200 OK\nContent-Type: application/octet-stream\nX-Test: yes\n" ..
      ("Content-Length: %d\n\nbody: %d bytes saved to %s\n"):format(#body, #body, file), out)
    assert.is_true(helper.read_file(file) == body, "the saved body differs from the one sent")
    os.remove(file)
  end)

  it("prints the body size when no file is given", function()
    local status, out, err = fetch("http://127.0.0.1:%d/",
      { "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world" })
    assert.equal(0, status, err)
    assert.equal("HTTP/1.1 200 OK\nContent-Length: 11\n\nbody: 11 bytes\n", out)
  end)

  it("asks for / when the URL has no path, and never sends the fragment", function()
    local _, _, _, request = fetch("http://127.0.0.1:%d", { "HTTP/1.0 204 No Content\r\n\r\n" })
    assert.equal("GET / HTTP/1.1", (parse_request(request)))
    _, _, _, request = fetch("http://127.0.0.1:%d?q=1#top", { "HTTP/1.0 204 No Content\r\n\r\n" })
    assert.equal("GET /?q=1 HTTP/1.1", (parse_request(request)))
    _, _, _, request = fetch("http://127.0.0.1:%d/a#b", { "HTTP/1.0 204 No Content\r\n\r\n" })
    assert.equal("GET /a HTTP/1.1", (parse_request(request)))
  end)

  it("reads a large body to the end of the stream", function()
    local piece = ("0123456789abcdef"):rep(64 * 1024) -- 1 MiB
    local file = helper.tmpname(".body")
    local status, out, err = fetch("http://127.0.0.1:%d/big",
      { "HTTP/1.1 200 OK\r\n\r\n", piece, piece, "end" }, { file })
    assert.equal(0, status, err)
    assert.matches("body: 2097155 bytes saved to", out, 1, true)
    assert.is_true(helper.read_file(file) == piece .. piece .. "end")
    os.remove(file)
  end)

  it("reports an empty body and succeeds on any HTTP status", function()
    local status, out, err = fetch("http://127.0.0.1:%d/missing",
      { "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n" })
    assert.equal(0, status, err)
    assert.equal("HTTP/1.1 404 Not Found\nContent-Length: 0\n\nbody: 0 bytes\n", out)
  end)

  it("resolves host names and sends the name in Host", function()
    local status, out, err, request, port = fetch("http://localhost:%d/",
      { "HTTP/1.1 200 OK\r\n\r\nok" })
    assert.equal(0, status, err)
    assert.matches("body: 2 bytes", out, 1, true)
    local _, headers = parse_request(request)
    assert.equal("localhost:" .. port, headers.host)
  end)

  it("talks to an IPv6 literal in brackets", function()
    local status, out, err, request, port = fetch("http://[::1]:%d/six",
      { "HTTP/1.1 200 OK\r\n\r\nsix" }, nil, { host = "::1" })
    assert.equal(0, status, err)
    assert.matches("body: 3 bytes", out, 1, true)
    local request_line, headers = parse_request(request)
    assert.equal("GET /six HTTP/1.1", request_line)
    assert.equal("[::1]:" .. port, headers.host)
  end)

  it("fails on an answer that is not HTTP", function()
    local status, out, err = fetch("http://127.0.0.1:%d/", { "hello, this is not HTTP\n" })
    assert.equal(1, status)
    assert.equal("", out)
    assert.matches("^raw_http_get: not an HTTP response", err)
  end)

  it("fails when the body cannot be saved", function()
    local status, _, err = fetch("http://127.0.0.1:%d/", { "HTTP/1.1 200 OK\r\n\r\nx" },
      { "/nonexistent-dir/for/sure/body" })
    assert.equal(1, status)
    assert.matches("^raw_http_get: /nonexistent%-dir/for/sure/body: No such file", err)
  end)

  it("fails clearly when nothing listens", function()
    local port = srv.run(function()
      local listener = srv.tcp.listen({ port = 0 }, function() end)
      local _, p = listener:address()
      listener:close()
      return p
    end)
    local status, out, err = helper.exec({ script, ("http://127.0.0.1:%d/"):format(port) })
    assert.equal(1, status)
    assert.equal("", out)
    assert.equal(("raw_http_get: cannot connect to 127.0.0.1 port %d: connection refused\n")
      :format(port), err)
  end)

  it("refuses bad URLs with a message and exit status 1", function()
    local cases = {
      { {}, "usage: raw_http_get.lua URL [FILE]" },
      { { "https://example.com/" }, "only http:// URLs are supported, not https://" },
      { { "ftp://example.com/x" }, "only http:// URLs are supported, not ftp://" },
      { { "example.com/x" }, "not a URL: example.com/x" },
      { { "http://" }, "bad host or port in http://" },
      { { "http://example.com:abc/" }, "bad host or port in http://example.com:abc/" },
      { { "http://example.com:70000/" }, "port out of range in http://example.com:70000/" },
      { { "http://example.com:0/" }, "port out of range in http://example.com:0/" },
    }
    for _, case in ipairs(cases) do
      local args, message = case[1], case[2]
      local status, out, err = helper.exec({ script, table.unpack(args) })
      assert.equal(1, status, message)
      assert.equal("", out)
      assert.equal("raw_http_get: " .. message .. "\n", err)
    end
  end)
end)
