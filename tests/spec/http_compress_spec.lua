-- Response compression (srv.http.listen{ compress = ... }): negotiated by Accept-Encoding with
-- q-values, Vary on every response that could have been compressed, min_size and types,
-- streaming (each res:write decodable as it arrives), HEAD, ETags, precompressed static
-- files. The clients are curl and Python (http.client and zlib), independent of luasrv.
local helper = require "helper"
local C = require "conformance"

local q = helper.shell_quote
local PAGE_LEN = #(("<p>hello compressed world</p>\n"):rep(700))

describe("response compression", function()
  local server, url, url2, dir

  setup(function()
    dir = helper.tmpname("-gz")
    helper.run("mkdir -p " .. q(dir))
    helper.write_file(dir .. "/page.html", ("static page\n"):rep(300))
    helper.run(("gzip -k %s/page.html"):format(q(dir)))
    server = helper.start(C.fixture("compress_app.lua"), { args = { dir }, listeners = 2 })
    url, url2 = server.urls[1], server.urls[2]
  end)

  teardown(function()
    if server then server:cleanup() end
    helper.run("rm -rf " .. q(dir))
  end)

  -- curl's view: the response headers (lower-case names) and the decoded body length.
  local function curl(target, extra)
    local out = helper.capture(("curl -s %s -D - -o %s/body %s%s"):format(extra or "--compressed",
      q(dir), url, target))
    local h = {}
    for name, value in out:gmatch("\n([%w-]+): ([^\r\n]*)") do h[name:lower()] = value end
    h.status = tonumber(out:match("^HTTP/1%.1 (%d+)"))
    return h, #(helper.read_file(dir .. "/body") or "")
  end

  it("gzips for curl --compressed, and curl decodes it", function()
    local h, n = curl("/")
    assert.equal("gzip", h["content-encoding"])
    assert.equal("Accept-Encoding", h["vary"])
    assert.equal(PAGE_LEN, n)
    assert.is_true(tonumber(h["content-length"]) < PAGE_LEN / 20)
  end)

  it("sends identity, with Vary, to a client that does not ask or refuses gzip", function()
    for _, extra in ipairs({ "", "-H 'Accept-Encoding: gzip;q=0'",
                             "-H 'Accept-Encoding: *;q=0, identity'", "-H 'Accept-Encoding: br'" }) do
      local h, n = curl("/", extra)
      assert.is_nil(h["content-encoding"], extra)
      assert.equal("Accept-Encoding", h["vary"], extra)
      assert.equal(PAGE_LEN, n)
    end
    local h = curl("/", "-H 'Accept-Encoding: br;q=1, *;q=0.5'")
    assert.equal("gzip", h["content-encoding"]) -- * covers gzip
  end)

  it("leaves small bodies, other types and already encoded bodies alone (no Vary)", function()
    for _, target in ipairs({ "/small", "/png", "/encoded" }) do
      local h = curl(target)
      assert.is_nil(h["vary"], target)
      assert.falsy(h["content-encoding"] == "gzip", target)
    end
    assert.equal("gzip", curl("/json")["content-encoding"]) -- application/json is listed
  end)

  it("follows a listener's own level, min_size and types", function()
    local function at2(target)
      local out = helper.capture(("curl -s --compressed -D - -o /dev/null %s%s"):format(url2, target))
      return out:match("Content%-Encoding: (%S+)")
    end
    assert.equal("gzip", at2("/plain"))   -- 500 bytes >= min_size 100, text/plain listed
    assert.is_nil(at2("/"))               -- text/html is not listed there
  end)

  it("gives HEAD the headers GET gets, without a body", function()
    local head = helper.capture(("curl -s -I -H 'Accept-Encoding: gzip' %s/"):format(url))
    local get = helper.capture(("curl -s -D - -o /dev/null -H 'Accept-Encoding: gzip' %s/"):format(url))
    assert.equal(get:match("Content%-Length: (%d+)"), head:match("Content%-Length: (%d+)"))
    assert.matches("Content%-Encoding: gzip", head)
  end)

  it("makes a strong ETag weak for the compressed variant", function()
    assert.equal('W/"v1"', curl("/etag")["etag"])
    assert.equal('"v1"', curl("/etag", "")["etag"])
  end)

  it("decodes with Python's http.client and gzip, and identity without Accept-Encoding", function()
    local out = helper.capture("python3 -c " .. q(([[
import gzip, http.client
c = http.client.HTTPConnection("127.0.0.1", %d)
c.request("GET", "/", headers={"Accept-Encoding": "gzip"})
r = c.getresponse(); b = r.read()
print(r.getheader("Content-Encoding"), len(gzip.decompress(b)))
c.request("GET", "/")
r = c.getresponse(); b = r.read()
print(r.getheader("Content-Encoding"), len(b))
]]):format(server.port)))
    assert.equal(("gzip %d\nNone %d\n"):format(PAGE_LEN, PAGE_LEN), out)
  end)

  it("streams: each res:write can be decoded as it arrives", function()
    local out = helper.capture("python3 -c " .. q(([[
import socket, time, zlib
s = socket.create_connection(("127.0.0.1", %d)); s.settimeout(5)
s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
buf, events, t0 = b"", [], time.time()
while b"\r\n0\r\n\r\n" not in buf:
    buf += s.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    data, rest = b"", body
    while True:  # the complete chunks so far
        line, sep, after = rest.partition(b"\r\n")
        if not sep: break
        n = int(line.split(b";")[0], 16)
        if n == 0 or len(after) < n + 2: break
        data += after[:n]; rest = after[n + 2:]
    text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    pieces = len(set(l for l in text.split(b"\n") if l))
    if pieces > len(events):
        events.append(time.time() - t0)
print(b"Content-Encoding: gzip" in head, len(events), events[0] < 0.25, events[-1] > 0.5)
]]):format(server.port)))
    -- three pieces decoded one by one as they came, the first before the handler's first
    -- sleep was over, the last after the second
    assert.equal("True 3 True True\n", out)
  end)

  it("serves headless Chromium gzip, which it decodes", function()
    local dom = helper.capture(("timeout 60 chromium --headless --no-sandbox --disable-gpu " ..
      "--dump-dom %s/ 2>/dev/null"):format(url))
    assert.equal(700, select(2, dom:gsub("hello compressed world", "")))
    -- the access log shows what went over the wire: the compressed size, not 21000 bytes
    local line
    for _ = 1, 50 do -- the access log is flushed every 0.2 s
      for l in server:stdout():gmatch("[^\n]+") do
        if l:find("HeadlessChrome", 1, true) and l:find('"GET / ', 1, true) then line = l end
      end
      if line then break end
      os.execute("sleep 0.1")
    end
    assert.truthy(line, "no access log line for Chromium's request")
    local bytes = tonumber(line:match('" 200 (%d+) '))
    assert.is_true(bytes < PAGE_LEN / 20, line)
  end)

  it("does not compress a precompressed static file again", function()
    local h = helper.capture(("curl -s -D - -o %s/got.gz -H 'Accept-Encoding: gzip' %s/static/page.html")
      :format(q(dir), url))
    assert.matches("Content%-Encoding: gzip", h)
    assert.equal(helper.read_file(dir .. "/page.html.gz"), helper.read_file(dir .. "/got.gz"))
  end)

  it("refuses bad compress options at the caller's line", function()
    local srv = require "luasrv"
    for _, bad in ipairs({ { level = 42 }, { min_size = -1 }, { types = "text/html" }, "yes" }) do
      local ok, err = pcall(function() srv.http.listen({ port = 0, compress = bad }, function() end) end)
      assert.is_false(ok)
      assert.matches("http_compress_spec%.lua:%d+: .*compress", err)
    end
  end)
end)
