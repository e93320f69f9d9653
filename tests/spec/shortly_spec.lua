-- examples/shortly/app.lua end to end: a real redis-server, the example under the luasrv
-- command (also with --workers 2), curl as the client, and headless Chromium once.
local helper = require "helper"
local R = require "redis_helper"

local APP = helper.path("examples/shortly/app.lua")
local q = helper.shell_quote

-- status, location, body of a request made with curl (no redirect following).
local function curl(args)
  local body_file = helper.tmpname(".body")
  local out = helper.capture(("curl -s -o %s -w '%%{http_code} %%{redirect_url}' %s")
    :format(q(body_file), args))
  local body = helper.read_file(body_file) or ""
  os.remove(body_file)
  local status, location = out:match("^(%d+) ?(.*)$")
  return tonumber(status), location, body
end

local function submit(base, url)
  return curl(("--data-urlencode %s %s/"):format(q("url=" .. url), base))
end

-- Shortens `url` on the server at `base`, follows the short link `times` times (each a new
-- connection), checking each redirect, and returns the id.
local function shorten_and_follow(base, url, times)
  local _, location = submit(base, url)
  local id = location:match("/([0-9a-z]+)%+$")
  assert.truthy(id, location)
  for _ = 1, times do
    local status, target = curl(base .. "/" .. id)
    assert.equal(302, status)
    assert.equal(url, target)
  end
  return id
end

-- Decodes a PNG (8-bit RGB or RGBA, as Chromium writes them) with Python's zlib and reports
-- its size and how many pixels are not white.
local PNG_STATS = [[
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n"
pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    chunk = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, color = struct.unpack(">IIBB", chunk[:10])
    elif kind == b"IDAT":
        idat += chunk
    pos += 12 + n
assert depth == 8 and color in (2, 6)
bpp = 3 if color == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, out, i = bytearray(stride), 0, 0
for y in range(h):
    f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
    i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    out += sum(1 for x in range(0, stride, bpp) if line[x:x + 3] != b"\xff\xff\xff")
    prev = line
print(w, h, out)
]]

describe("Shortly, the URL shortener on Redis", function()
  local redis_server, app, base

  setup(function()
    assert(R.available(), "redis-server is not installed (run scripts/setup)")
    redis_server = R.start()
    app = helper.start(APP, { args = { "0" },
      env = { REDIS_URL = ("redis://127.0.0.1:%d/3"):format(redis_server.port) } })
    base = app.url
  end)

  teardown(function()
    if app then app:cleanup() end
    if redis_server then redis_server:stop() end
  end)

  it("shows the form", function()
    local status, _, body = curl(base .. "/")
    assert.equal(200, status)
    assert.truthy(body:find('<form action="/" method="post">', 1, true))
    assert.truthy(body:find('name="url"', 1, true))
  end)

  it("shortens, redirects, counts clicks and shows the details", function()
    local status, location = submit(base, "https://www.lua.org/manual/5.4/")
    assert.equal(303, status)
    local id = location:match("/([0-9a-z]+)%+$")
    assert.truthy(id, location)
    -- The same URL keeps its id; another gets the next one.
    assert.equal(location, select(2, submit(base, "https://www.lua.org/manual/5.4/")))
    local status2, location2 = submit(base, "http://example.com/other?a=1&b=2")
    assert.equal(303, status2)
    assert.are_not.equal(location, location2)
    for n = 1, 3 do
      local s, target = curl(base .. "/" .. id)
      assert.equal(302, s)
      assert.equal("https://www.lua.org/manual/5.4/", target)
      assert.equal(tostring(n), redis_server:cli("-n 3 GET shortly:click-count:" .. id))
    end
    local s, _, body = curl(base .. "/" .. id .. "+")
    assert.equal(200, s)
    assert.truthy(body:find('<dd id="clicks">3</dd>', 1, true))
    assert.truthy(body:find('href="https://www.lua.org/manual/5.4/"', 1, true))
    -- The details page does not count as a click.
    assert.equal("3", redis_server:cli("-n 3 GET shortly:click-count:" .. id))
    -- The state is in Redis, database 3, as REDIS_URL says.
    assert.equal("https://www.lua.org/manual/5.4/", redis_server:cli("-n 3 GET shortly:url-target:" .. id))
  end)

  it("answers 404 with its page for unknown ids and paths", function()
    for _, path in ipairs({ "/zzzz", "/zzzz+", "/1++", "/no/such/page", "/%3Cb%3E" }) do
      local status, _, body = curl(base .. path)
      assert.equal(404, status, path)
      assert.truthy(body:find("<h2>Not Found</h2>", 1, true), path)
    end
    -- The redirect counts in the same round trip as it looks up; a miss leaves no counter.
    assert.equal("0", redis_server:cli("-n 3 EXISTS shortly:click-count:zzzz"))
  end)

  it("refuses URLs that are not http or https, and escapes what it echoes", function()
    for _, bad in ipairs({ "javascript:alert(1)", "ftp://example.com/", "example.com", "",
      "http://", "http:// spaces.example/", "https://a.example/\"><script>alert(1)</script> x" }) do
      local status, location, body = submit(base, bad)
      assert.equal(400, status, bad)
      assert.equal("", location)
      assert.truthy(body:find("Please enter a valid", 1, true), bad)
      assert.falsy(body:find("<script>", 1, true), bad)
    end
    local status = curl(("-d other=1 %s/"):format(base))
    assert.equal(400, status)
    -- A URL that is valid but full of HTML is escaped on the details page.
    local _, location = submit(base, 'https://a.example/?q="><script>alert(1)</script>')
    local _, _, body = curl(location)
    assert.falsy(body:find("<script>", 1, true))
    assert.truthy(body:find("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;", 1, true))
  end)

  it("renders in headless Chromium", function()
    local _, location = submit(base, "https://chromium.example/page")
    local shot = helper.tmpname(".png")
    local profile = helper.tmpname("-chromium")
    local flags = ("timeout 60 chromium --headless --no-sandbox --disable-gpu --user-data-dir=%s " ..
      "--window-size=800,600"):format(q(profile))
    helper.capture(("%s --screenshot=%s %s 2>/dev/null"):format(flags, q(shot), location))
    local stats = helper.capture(("python3 - %s <<'EOF'\n%sEOF\n"):format(q(shot), PNG_STATS))
    local w, h, inked = stats:match("^(%d+) (%d+) (%d+)")
    assert.equal("800", w, stats)
    assert.equal("600", h)
    -- Text and links draw a few thousand non-white pixels; a blank page none.
    assert.is_true(tonumber(inked) > 1000, stats)
    local dom = helper.capture(("%s --dump-dom %s 2>/dev/null"):format(flags, location))
    assert.truthy(dom:find('<dd id="clicks">0</dd>', 1, true), dom)
    assert.truthy(dom:find("https://chromium.example/page", 1, true))
    os.remove(shot)
    helper.run("rm -rf " .. q(profile))
  end)

  it("answers 503 when Redis cannot be reached", function()
    local port = helper.free_tcp_ports(1)[1]
    local down = helper.start(APP, { args = { "0" },
      env = { REDIS_URL = ("redis://127.0.0.1:%d/0"):format(port) } })
    local ok, err = pcall(function()
      local status, _, body = submit(down.url, "https://example.com/")
      assert.equal(503, status)
      assert.truthy(body:find("Unavailable", 1, true))
      assert.truthy(down:stderr():find("connection refused", 1, true))
    end)
    down:cleanup()
    assert(ok, err)
  end)

  it("works the same with a pooled connection per request (SHORTLY_POOL=1)", function()
    local pooled = helper.start(APP, { args = { "0" }, env = { SHORTLY_POOL = "1",
      REDIS_URL = ("redis://127.0.0.1:%d/3"):format(redis_server.port) } })
    local ok, err = pcall(function()
      local id = shorten_and_follow(pooled.url, "https://pooled.example/", 5)
      assert.equal("5", redis_server:cli("-n 3 GET shortly:click-count:" .. id))
      assert.equal(404, (curl(pooled.url .. "/zzzz")))
    end)
    pooled:cleanup()
    assert(ok, err)
  end)

  it("stops at once on SIGTERM after serving (an idle Redis connection holds nothing up)", function()
    local own = helper.start(APP, { args = { "0" },
      env = { REDIS_URL = ("redis://127.0.0.1:%d/3"):format(redis_server.port) } })
    shorten_and_follow(own.url, "https://stop.example/", 3)
    local t0 = os.time()
    assert.equal(0, own:stop("TERM"))
    assert.is_true(os.time() - t0 <= 3)
    assert.falsy(own:stderr():find("grace period over", 1, true), own:stderr())
    own:cleanup()
  end)

  it("shares its state between two workers", function()
    local workers = helper.start(APP, { flags = { "--workers", "2" }, args = { "0" },
      env = { REDIS_URL = ("redis://127.0.0.1:%d/3"):format(redis_server.port) } })
    local ok, err = pcall(function()
      -- 40 requests, each on a new connection: both workers answer some of them.
      local id = shorten_and_follow(workers.url, "https://workers.example/", 40)
      assert.equal("40", redis_server:cli("-n 3 GET shortly:click-count:" .. id))
      -- The first server (not a worker of this one) sees the same link.
      local _, _, body = curl(base .. "/" .. id .. "+")
      assert.truthy(body:find('<dd id="clicks">40</dd>', 1, true))
      -- Each worker keeps its own pooled connection: one or two from the workers (both, if
      -- both served), one from the first server; not one per request.
      local clients = redis_server:clients()
      assert.is_true(clients >= 2 and clients <= 3, tostring(clients))
    end)
    workers:cleanup()
    assert(ok, err)
  end)
end)
