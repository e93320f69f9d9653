--- Shared helpers for the HTTP conformance specs (tests/spec/http_*_spec.lua): start a fixture
-- server, talk raw bytes to it over srv.tcp.connect, and parse what comes back strictly
-- (RFC 9112: CRLF line ends, Content-Length / chunked / close-delimited bodies).
-- Not a spec itself (the name does not end in _spec), so ctest does not run it.
local srv = require "luasrv"
local helper = require "helper"

local H = {}
H.helper = helper

--- Path of a fixture script in tests/fixtures/.
function H.fixture(name)
  return helper.path("tests/fixtures/" .. name)
end

--- Starts the luasrv binary on a fixture (helper.start options: flags, args, listeners).
function H.start(name, opts)
  return helper.start(H.fixture(name), opts)
end

--- The line number of the first line of `path` containing `needle` (plain text).
--- The life cycle of one fixture server shared by a describe block:
--   local life = H.serve("http_app.lua", function(s) server, port = s, s.port end)
--   setup(life.setup); teardown(life.teardown); after_each(life.check)
-- check fails the test that killed the server, with its stderr.
function H.serve(name, on_start, opts)
  local f = {}
  function f.setup()
    f.server = H.start(name, opts)
    on_start(f.server)
  end
  function f.teardown()
    if f.server then f.server:cleanup() end
  end
  function f.check()
    local server = f.server
    -- Plain error: busted's assert lives in the spec files' environment, not here.
    if server.status == nil and not server:alive() then
      error("the server died:\n" .. server:stderr(), 2)
    end
  end
  return f
end

function H.line_of(path, needle)
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    if line:find(needle, 1, true) then return n end
  end
  error(("%s does not contain %q"):format(path, needle), 2)
end

--- Waits (polling, inside srv.run) until cond() is true or `timeout` seconds pass; returns
-- whether it became true.
function H.wait_for(cond, timeout)
  local deadline = srv.monotime() + (timeout or 5)
  while not cond() do
    if srv.monotime() > deadline then return false end
    srv.sleep(0.01)
  end
  return true
end

--- Polls the server's stdout/stderr (no loop needed) until `pattern` (plain) shows up.
function H.wait_output(server, which, needle, timeout)
  local deadline = srv.monotime() + (timeout or 5)
  while true do
    local text = which == "stderr" and server:stderr() or server:stdout()
    if text:find(needle, 1, true) then return text end
    if srv.monotime() > deadline then return text end
    os.execute("sleep 0.02")
  end
end

--- Starts fn(...) as its own task on the loop (see helper.spawn).
H.spawn = helper.spawn

--- Waits for spawned records, then re-raises the first failure.
function H.join(recs, timeout)
  local ok = H.wait_for(function()
    for _, r in ipairs(recs) do
      if not r.done then return false end
    end
    return true
  end, timeout or 20)
  assert(ok, "spawned tasks did not finish")
  for _, r in ipairs(recs) do
    if not r.ok then error(r.err, 0) end
  end
end

--- A simple request: "METHOD target HTTP/1.1", Host unless `extra` has one, extra header
-- lines (a string of "Name: value\r\n" lines), and a body with its Content-Length.
function H.req(method, target, extra, body, version)
  extra = extra or ""
  local host = extra:lower():find("^host:") or extra:lower():find("\nhost:")
  local head = ("%s %s HTTP/%s\r\n"):format(method, target, version or "1.1")
  if not host then head = head .. "Host: test.local\r\n" end
  head = head .. extra
  if body then head = head .. "Content-Length: " .. #body .. "\r\n" end
  return head .. "\r\n" .. (body or "")
end

function H.get(target, extra) return H.req("GET", target, extra) end

-- ---- a raw client connection with a strict response reader ---------------------------------

local Client = {}
Client.__index = Client

--- Connects to 127.0.0.1:port; every read waits at most `timeout` seconds (default 5).
function H.connect(port, timeout)
  local conn, err, code = srv.tcp.connect("127.0.0.1", port, { timeout = 5 })
  assert(conn, ("connect failed: %s (%s)"):format(tostring(err), tostring(code)))
  conn:settimeout(timeout or 5)
  return setmetatable({ conn = conn, buf = "", eof = false, raw = "" }, Client)
end

--- Sends bytes (several arguments are sent in one write).
function Client:send(...)
  local ok, err = self.conn:write(...)
  return ok ~= nil, err
end

function Client:settimeout(s) self.conn:settimeout(s) end

function Client:close()
  self.conn:close()
end

--- Reads more input. Returns true when bytes came; false, "timeout" when none came in time;
-- false, "closed" at the end of input (a reset counts as the end: self.reset is set).
function Client:fill()
  if self.eof then return false, "closed" end
  local data, err, code, partial = self.conn:read()
  if data then
    self.buf = self.buf .. data
    self.raw = self.raw .. data
    return true
  end
  if partial then
    self.buf = self.buf .. partial
    self.raw = self.raw .. partial
  end
  if err == "timeout" then return false, "timeout" end
  self.eof = true
  if code ~= "EOF" then self.reset = code or err end
  return false, "closed"
end

--- The next CRLF-terminated line, without the CRLF. A bare LF or CR inside is an error.
function Client:line(max)
  max = max or 65536
  while true do
    local i = self.buf:find("\n", 1, true)
    if i then
      local line = self.buf:sub(1, i - 1)
      self.buf = self.buf:sub(i + 1)
      if line:sub(-1) ~= "\r" then return nil, "line not ended by CRLF: " .. ("%q"):format(line) end
      line = line:sub(1, -2)
      if line:find("\r", 1, true) then return nil, "bare CR in line: " .. ("%q"):format(line) end
      return line
    end
    if #self.buf > max then return nil, "line too long" end
    local ok, err = self:fill()
    if not ok then return nil, err end
  end
end

--- Exactly n bytes.
function Client:bytes(n)
  while #self.buf < n do
    local ok, err = self:fill()
    if not ok then return nil, err end
  end
  local data = self.buf:sub(1, n)
  self.buf = self.buf:sub(n + 1)
  return data
end

--- Everything until the peer closes (bounded by `max` seconds overall).
function Client:until_close(max)
  local deadline = srv.monotime() + (max or 5)
  while not self.eof do
    local ok, err = self:fill()
    if not ok and err == "timeout" then return nil, "timeout" end
    if srv.monotime() > deadline then return nil, "timeout" end
  end
  local data = self.buf
  self.buf = ""
  return data
end

--- Waits up to `timeout` seconds for the peer to close, expecting no more bytes. Returns true,
-- or false and what went wrong ("timeout" while still open, or the unexpected bytes).
function Client:expect_close(timeout)
  local old = timeout or 3
  self.conn:settimeout(old)
  local deadline = srv.monotime() + old
  while not self.eof do
    if #self.buf > 0 then break end
    local ok, err = self:fill()
    if not ok and err == "timeout" then break end
    if srv.monotime() > deadline then break end
  end
  self.conn:settimeout(5)
  if #self.buf > 0 then return false, "unexpected bytes: " .. ("%q"):format(self.buf:sub(1, 300)) end
  if not self.eof then return false, "the connection is still open" end
  return true
end

--- Whether the connection is still open after waiting `s` seconds with nothing arriving.
function Client:still_open(s)
  self.conn:settimeout(s)
  local ok, err = self:fill()
  self.conn:settimeout(5)
  if ok then return false, "unexpected bytes: " .. ("%q"):format(self.buf:sub(1, 300)) end
  return err == "timeout", err
end

local function parse_status_line(line)
  local major, minor, code, reason = line:match("^HTTP/(%d)%.(%d) (%d%d%d) ([^\r\n]*)$")
  if not major then return nil end
  return { version = major .. "." .. minor, status = tonumber(code), reason = reason }
end

--- Reads a status line and header section. Returns a response record:
--   status, reason, version, headers (lower-case name -> values joined by ", "),
--   fields (list of { name, value } as sent), count (lower-case name -> how many),
--   head (the raw head text)
function Client:head()
  local line, err = self:line()
  if not line then return nil, "no status line: " .. tostring(err) end
  local r = parse_status_line(line)
  if not r then return nil, "bad status line: " .. ("%q"):format(line) end
  r.headers, r.fields, r.count = {}, {}, {}
  local head = { line }
  for _ = 1, 1000 do
    line, err = self:line()
    if not line then return nil, "header section cut short: " .. tostring(err) end
    head[#head + 1] = line
    if line == "" then
      r.head = table.concat(head, "\r\n")
      return r
    end
    local name, value = line:match("^([!#$%%&'*+%-.^_`|~%w]+):[ \t]*(.-)[ \t]*$")
    if not name then return nil, "bad header line: " .. ("%q"):format(line) end
    local lname = name:lower()
    r.fields[#r.fields + 1] = { name, value }
    r.count[lname] = (r.count[lname] or 0) + 1
    r.headers[lname] = r.headers[lname] and (r.headers[lname] .. ", " .. value) or value
  end
  return nil, "too many header lines"
end

--- Reads one chunk of a chunked body: its data, "" for the last chunk (trailers consumed).
function Client:chunk()
  local line, err = self:line()
  if not line then return nil, "chunk size line: " .. tostring(err) end
  local hex = line:match("^(%x+)[ \t]*;?.*$")
  if not hex or #hex > 12 then return nil, "bad chunk size line: " .. ("%q"):format(line) end
  local size = tonumber(hex, 16)
  if size == 0 then
    for _ = 1, 100 do
      local trailer, terr = self:line()
      if not trailer then return nil, "trailer section: " .. tostring(terr) end
      if trailer == "" then return "" end
    end
    return nil, "too many trailer lines"
  end
  local data, derr = self:bytes(size)
  if not data then return nil, "chunk data cut short: " .. tostring(derr) end
  local crlf, cerr = self:bytes(2)
  if crlf ~= "\r\n" then return nil, "chunk data not followed by CRLF: " .. tostring(crlf or cerr) end
  return data
end

local function final_coding_chunked(te)
  local last
  for coding in te:gmatch("[^,%s]+") do last = coding:lower() end
  return last == "chunked"
end

--- Reads the body of response r as RFC 9112 §6.3 says: none for HEAD, 1xx, 204 and 304;
-- chunked; Content-Length; otherwise until the connection closes. Sets r.body, r.framing
-- ("none", "chunked", "length", "close") and r.chunks for chunked bodies.
function Client:body(r, is_head)
  local s = r.status
  if is_head or (s >= 100 and s < 200) or s == 204 or s == 304 then
    r.body, r.framing = "", "none"
    return true
  end
  local te = r.headers["transfer-encoding"]
  if te then
    if not final_coding_chunked(te) then
      r.framing = "close"
      local data, err = self:until_close()
      if not data then return nil, err end
      r.body = data
      return true
    end
    r.framing, r.chunks = "chunked", {}
    for _ = 1, 100000 do
      local data, err = self:chunk()
      if not data then return nil, err end
      if data == "" then
        r.body = table.concat(r.chunks)
        return true
      end
      r.chunks[#r.chunks + 1] = data
    end
    return nil, "too many chunks"
  end
  local cl = r.headers["content-length"]
  if cl then
    if not cl:match("^%d+$") then return nil, "bad Content-Length: " .. cl end
    r.framing = "length"
    local data, err = self:bytes(tonumber(cl))
    if not data then return nil, "body cut short: " .. tostring(err) end
    r.body = data
    return true
  end
  r.framing = "close"
  local data, err = self:until_close()
  if not data then return nil, err end
  r.body = data
  return true
end

--- Reads one final response (1xx interim responses are collected in r.interim). opts.head:
-- the request was HEAD. Returns r, or nil and an error message.
function Client:response(opts)
  opts = opts or {}
  local interim = {}
  for _ = 1, 10 do
    local r, err = self:head()
    if not r then return nil, err end
    if r.status >= 200 then
      r.interim = interim
      local ok, berr = self:body(r, opts.head)
      if not ok then return nil, "body: " .. tostring(berr), r end
      return r
    end
    interim[#interim + 1] = r
  end
  return nil, "too many interim responses"
end

--- Like response() but raises with a clear message on failure.
function Client:must_response(opts)
  local r, err = self:response(opts)
  if not r then error("no complete response: " .. tostring(err) .. "\nreceived so far: " ..
    ("%q"):format(self.raw:sub(1, 600)), 2) end
  return r
end

--- One exchange on a new connection: sends `bytes`, reads one response, closes. opts: head,
-- timeout. Returns the response (raises if none).
function H.exchange(port, bytes, opts)
  opts = opts or {}
  local c = H.connect(port, opts.timeout)
  c:send(bytes)
  local r, err = c:response(opts)
  c:close()
  if not r then error("no complete response: " .. tostring(err) .. "\nreceived: " ..
    ("%q"):format(c.raw:sub(1, 600)), 2) end
  return r
end

--- Sends `bytes` on a new connection and reads one response, then checks that the server
-- closes the connection without sending anything more. Returns the response, the client,
-- and (true | false, why) for the close check.
function H.exchange_then_close(port, bytes, opts)
  opts = opts or {}
  local c = H.connect(port, opts.timeout)
  c:send(bytes)
  local r, err = c:response(opts)
  if not r then
    c:close()
    error("no complete response: " .. tostring(err) .. "\nreceived: " ..
      ("%q"):format(c.raw:sub(1, 600)), 2)
  end
  local closed, why = c:expect_close(opts.close_within or 3)
  c:close()
  return r, closed, why
end

local function ended(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return true end
  local stat = f:read("a") or ""
  f:close()
  local state = stat:match("^%d+ %b() (%a)")
  return state == nil or state == "Z" or state == "X"
end

--- Stops a server with SIGTERM and checks that it exits with status 0 within `timeout`
-- seconds and that no sanitizer (ASan, LSan, UBSan) reported anything on stderr.
function H.assert_clean_stop(server, timeout)
  os.execute(("kill -TERM %d 2>/dev/null"):format(server.pid))
  local deadline = srv.monotime() + (timeout or 10)
  while not ended(server.pid) and srv.monotime() < deadline do
    os.execute("sleep 0.02")
  end
  local hung = not ended(server.pid)
  local status = server:stop(hung and "KILL" or "TERM")
  local err = server:stderr()
  assert(not hung, "the server did not exit within " .. (timeout or 10) .. "s of SIGTERM")
  assert(not err:find("Sanitizer", 1, true) and not err:find("runtime error:", 1, true),
    "sanitizer report:\n" .. err)
  assert(status == 0, "exit status " .. tostring(status) .. " after SIGTERM\n" .. err)
end

--- Case-insensitive set of the comma-separated tokens in a header value.
function H.token_set(value)
  local set = {}
  for tok in (value or ""):gmatch("[^,%s]+") do set[tok:upper()] = true end
  return set
end

return H
