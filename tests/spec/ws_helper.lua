--- A raw WebSocket client for the specs, on luasrv's own TCP client: it writes frames byte by
-- byte as a test wants them (bad ones included) and reads the server's frames as they are.
-- Call from inside srv.run.
local srv = require "luasrv"
local helper = require "helper"

local char, byte, concat, rep = string.char, string.byte, table.concat, string.rep

local M = {}

M.KEY = "dGhlIHNhbXBsZSBub25jZQ==" -- RFC 6455 §1.3's example
M.ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

local OP = { cont = 0, text = 1, binary = 2, close = 8, ping = 9, pong = 10 }
M.OP = OP

--- The handshake request for path, with extra header lines (a list of "Name: value").
function M.request(path, extra, host)
  local lines = {
    "GET " .. path .. " HTTP/1.1",
    "Host: " .. (host or "localhost"),
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: " .. M.KEY,
    "Sec-WebSocket-Version: 13",
  }
  for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
  return concat(lines, "\r\n") .. "\r\n\r\n"
end

--- Reads a response head: status, headers (lower-case names), the raw head.
function M.read_head(conn)
  local status_line = assert(conn:readline())
  local status = tonumber(status_line:match("^HTTP/1%.1 (%d%d%d)"))
  local headers = {}
  while true do
    local line = assert(conn:readline())
    line = line:gsub("\r$", "")
    if line == "" then break end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    headers[name:lower()] = value
  end
  return status, headers
end

--- Connects and sends raw bytes; returns the connection.
function M.connect_raw(port)
  local conn = assert(srv.tcp.connect("127.0.0.1", port))
  conn:settimeout(5)
  return conn
end

--- Opens a WebSocket on path: conn, status, headers. `first` is sent in the same write as
-- the handshake (frames the server must find after it).
function M.open(port, path, extra, first)
  local conn = M.connect_raw(port)
  conn:write(M.request(path, extra) .. (first or ""))
  local status, headers = M.read_head(conn)
  return conn, status, headers
end

local MASK = char(0x37, 0xfa, 0x21, 0x3d)

local function mask(payload, key)
  local out, k = {}, { byte(key, 1, 4) }
  for i = 1, #payload do
    out[i] = char(byte(payload, i) ~ k[(i - 1) % 4 + 1])
  end
  return concat(out)
end
M.mask = mask

--- One frame's bytes. opts: fin (default true), rsv (0-7), masked (default true), key.
function M.frame(opcode, payload, opts)
  opts = opts or {}
  payload = payload or ""
  local fin = opts.fin == nil and true or opts.fin
  local b0 = (fin and 0x80 or 0) | ((opts.rsv or 0) << 4) | (OP[opcode] or opcode)
  local masked = opts.masked == nil and true or opts.masked
  local len, head = #payload
  local mbit = masked and 0x80 or 0
  if len < 126 then
    head = char(b0, mbit | len)
  elseif len < 65536 then
    head = char(b0, mbit | 126, len >> 8, len & 0xff)
  else
    head = char(b0, mbit | 127, 0, 0, 0, 0, (len >> 24) & 0xff, (len >> 16) & 0xff,
      (len >> 8) & 0xff, len & 0xff)
  end
  if not masked then return head .. payload end
  local key = opts.key or MASK
  return head .. key .. mask(payload, key)
end

--- A close frame's payload: code and reason.
function M.close_payload(code, reason)
  return char(code >> 8, code & 0xff) .. (reason or "")
end

--- Reads one frame from the server: opcode, payload, fin, rsv; nil, err at the end.
function M.read_frame(conn)
  local h, err = conn:read(2)
  if not h then return nil, err end
  local b0, b1 = byte(h, 1, 2)
  assert(b1 & 0x80 == 0, "the server masked a frame")
  local len = b1 & 0x7f
  if len == 126 then
    local e = assert(conn:read(2))
    len = (byte(e, 1) << 8) | byte(e, 2)
  elseif len == 127 then
    local e = assert(conn:read(8))
    len = 0
    for i = 1, 8 do len = (len << 8) | byte(e, i) end
  end
  local payload = len > 0 and assert(conn:read(len)) or ""
  return b0 & 0x0f, payload, b0 & 0x80 ~= 0, (b0 >> 4) & 7
end

--- Reads the server's close frame: its code (1005 when none) and reason.
function M.read_close(conn)
  local op, payload = M.read_frame(conn)
  if op == nil then return nil, payload end
  if op ~= OP.close then return nil, "expected a close frame, got opcode " .. op end
  if #payload == 0 then return 1005, "" end
  return (byte(payload, 1) << 8) | byte(payload, 2), payload:sub(3)
end

--- Whether the server closes the TCP connection (EOF) within its timeout.
function M.closed(conn)
  local data, err = conn:read()
  while data do data, err = conn:read() end
  return err == "closed"
end

--- Sends a message and reads the echo: opcode, payload.
function M.echo(conn, opcode, payload)
  conn:write(M.frame(opcode, payload))
  return M.read_frame(conn)
end

--- A clean close from the client side: sends 1000 and reads the answer's code.
function M.close(conn, code)
  conn:write(M.frame("close", M.close_payload(code or 1000)))
  local got = M.read_close(conn)
  M.closed(conn)
  conn:close()
  return got
end

--- Debian's interpreter, where python3-websockets lives (a python3 earlier on PATH may not
-- have it).
M.PYTHON = "/usr/bin/python3"

--- Runs a Python script: `head` (imports, helpers, ending with the line that opens
-- `def main():` or `async def main():`), then `body` indented into main, then `tail` (the line
-- that runs main and prints its result as JSON), with the arguments `args` (a string). Returns
-- the result, decoded; raises with what Python printed when that is not JSON.
function M.python(head, body, tail, args)
  local script = helper.tmpname(".py")
  helper.write_file(script, head .. "\n    " .. body:gsub("\n", "\n    ") .. "\n\n" .. tail .. "\n")
  local out = helper.capture(("timeout 120 %s %s %s 2>&1"):format(M.PYTHON, script, args))
  os.remove(script)
  local ok, result = pcall(srv.json.decode, out)
  assert(ok and result ~= nil, "python said: " .. out)
  return result
end

--- Starts tests/fixtures/ws_app.lua on a free port (stop it with server:cleanup()).
function M.start_fixture()
  return helper.start(helper.path("tests/fixtures/ws_app.lua"), { args = { "0" } })
end

--- In a describe block, given busted's setup and teardown (they live in the spec's own
-- environment): starts the fixture before its tests and stops it after them. Returns a table
-- whose `port` is the fixture's port once the tests run.
function M.fixture_hooks(setup, teardown)
  local fixture = {}
  setup(function()
    fixture.server = M.start_fixture()
    fixture.port = fixture.server.port
  end)
  teardown(function()
    if fixture.server then fixture.server:cleanup() end
  end)
  return fixture
end

M.rep = rep
return M
