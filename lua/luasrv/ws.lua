--- WebSocket (RFC 6455) in Lua: the server's routes (the opening handshake's checks, the
-- negotiation of subprotocols and permessage-deflate, the handler's run) and the client,
-- srv.ws.connect (its request and the checks of the answer). The connection itself (frames,
-- pings, the close handshake) is C: src/ws.c and src/ws_handshake.c.
--
--   app:websocket("/chat", function(ws, req) ... end, { subprotocols = { "chat" } })
--   local ws = srv.ws.connect("wss://example.com/chat", { timeout = 5 })
local core = require "luasrv.core"

local type, error, pairs, ipairs, tostring = type, error, pairs, ipairs, tostring
local xpcall, traceback = xpcall, debug.traceback
local lower, gmatch, find, concat = string.lower, string.gmatch, string.find, table.concat

local M = {}

local OPTION_TYPES = {
  max_message = "number",
  idle_timeout = "number",
  close_timeout = "number",
  subprotocols = "table",
  origins = "table",
  compress = "boolean",
}

--- Checks app:websocket's options at the caller's `level`; returns them (a table).
function M.check_options(opts, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error("bad argument #3 to 'websocket' (table expected, got " .. type(opts) .. ")", level + 1)
  end
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then
      error("websocket: unknown option '" .. tostring(k) .. "'", level + 1)
    end
    if type(v) ~= want then
      error(("websocket: option '%s' must be a %s"):format(k, want), level + 1)
    end
  end
  return opts
end

-- Whether a comma-separated header value lists `token` (case-insensitively).
local function has_token(value, token)
  if not value then return false end
  for item in gmatch(value, "[^,]+") do
    if lower((item:gsub("^%s+", ""):gsub("%s+$", ""))) == token then return true end
  end
  return false
end

-- The first of the server's subprotocols that the client offered, or nil.
local function choose_protocol(offered, supported)
  if not offered or not supported then return nil end
  local set = {}
  for item in gmatch(offered, "[^,]+") do
    set[(item:gsub("^%s+", ""):gsub("%s+$", ""))] = true
  end
  for _, p in ipairs(supported) do
    if set[p] then return p end
  end
  return nil
end

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- permessage-deflate (RFC 7692): the first offer whose parameters the server can honour gives
-- the response (always without context takeover on both sides, so the server keeps no zlib
-- state per connection) and the server's window bits; nil when there is none.
local function negotiate_deflate(header)
  if not header then return nil end
  for offer in gmatch(header, "[^,]+") do
    local params, n = {}, 0
    for p in gmatch(offer, "[^;]+") do n = n + 1; params[n] = trim(p) end
    if n > 0 and lower(params[1]) == "permessage-deflate" then
      local ok, bits, seen = true, nil, {}
      for i = 2, n do
        local name, value = params[i]:match('^([%w_]+)%s*=?%s*"?([^"]*)"?$')
        name = name and lower(name)
        if not name or seen[name] then ok = false break end
        seen[name] = true
        if name == "server_no_context_takeover" or name == "client_no_context_takeover" then
          ok = value == ""
        elseif name == "server_max_window_bits" then
          -- zlib cannot make a raw deflate stream with a 256-byte window: 9 to 15 only
          bits = find(value, "^%d%d?$") and tonumber(value)
          ok = bits ~= nil and bits >= 9 and bits <= 15
        elseif name == "client_max_window_bits" then
          ok = value == "" or (find(value, "^%d%d?$") and tonumber(value) >= 8 and tonumber(value) <= 15)
        else
          ok = false
        end
        if not ok then break end
      end
      if ok then
        local response = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        if bits then response = response .. "; server_max_window_bits=" .. bits end
        return response, bits or 15
      end
    end
  end
  return nil
end

local PLAIN = { ["Content-Type"] = "text/plain; charset=utf-8" }

-- A request that is not a valid opening handshake: the status, headers and body to answer.
local function refuse(req, opts)
  local h = req.headers
  if req.method ~= "GET" then
    return 405, { Allow = "GET", ["Content-Type"] = PLAIN["Content-Type"] }, "405 Method Not Allowed\n"
  end
  if not has_token(h.upgrade, "websocket") or not has_token(h.connection, "upgrade") then
    return 426, { Upgrade = "websocket", Connection = "Upgrade",
      ["Content-Type"] = PLAIN["Content-Type"] }, "426 Upgrade Required: this is a WebSocket endpoint\n"
  end
  if h["sec-websocket-version"] ~= "13" then
    return 426, { ["Sec-WebSocket-Version"] = "13", ["Content-Type"] = PLAIN["Content-Type"] },
      "426 Upgrade Required: WebSocket version 13 only\n"
  end
  -- A body would be read as frames: the handshake has none.
  if (h["content-length"] and h["content-length"] ~= "0") or h["transfer-encoding"] then
    return 400, PLAIN, "400 Bad Request: a WebSocket handshake has no body\n"
  end
  local key = h["sec-websocket-key"]
  -- 16 random bytes in base64: 22 characters and "==".
  if not key or not find(key, "^[%w+/][%w+/][%w+/]+==$") or #key ~= 24 then
    return 400, PLAIN, "400 Bad Request: missing or malformed Sec-WebSocket-Key\n"
  end
  if opts.origins then
    local origin, allowed = h.origin, false
    for _, o in ipairs(opts.origins) do
      if o == origin then allowed = true break end
    end
    if not allowed then return 403, PLAIN, "403 Forbidden: origin not allowed\n" end
  end
  return nil
end

-- ---- the client --------------------------------------------------------------------------

local CONNECT_OPTIONS = {
  headers = "table",
  subprotocols = "table",
  timeout = "number",
  tls = { table = true, boolean = true },
  max_message = "number",
  idle_timeout = "number",
  close_timeout = "number",
}

-- ws://host[:port][/path] or wss://...: scheme, host, port, the request target, Host's value.
local function parse_url(url)
  local scheme, rest = url:match("^(wss?)://(.*)$")
  if not scheme then return nil end
  local authority, target = rest:match("^([^/?#]*)([^#]*)")
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  local host, port = authority:match("^%[(.-)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]*):?(%d*)$") end
  if not host or host == "" then return nil end
  port = port ~= "" and tonumber(port) or (scheme == "wss" and 443 or 80)
  if port < 1 or port > 65535 then return nil end
  return scheme, host, port, target, authority
end

local function fail(conn, message)
  conn:close()
  return nil, "websocket: " .. message, "EHANDSHAKE"
end

--- srv.ws.connect(url [, opts]) -> ws | nil, message, code: a WebSocket client on ws:// or
-- wss:// (opts: headers, subprotocols, timeout, tls, max_message, idle_timeout,
-- close_timeout).
function M.connect(url, opts)
  if type(url) ~= "string" then
    error("bad argument #1 to 'connect' (string expected, got " .. type(url) .. ")", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    error("bad argument #2 to 'connect' (table expected, got " .. type(opts) .. ")", 2)
  end
  for k, v in pairs(opts) do
    local want = CONNECT_OPTIONS[k]
    if not want then error("connect: unknown option '" .. tostring(k) .. "'", 2) end
    if (type(want) == "table" and not want[type(v)]) or (type(want) == "string" and type(v) ~= want) then
      error(("connect: option '%s' has the wrong type (%s)"):format(k, type(v)), 2)
    end
  end
  local scheme, host, port, target, authority = parse_url(url)
  if not scheme then error("bad argument #1 to 'connect' (not a ws:// or wss:// URL: " .. url .. ")", 2) end
  local lines = { "GET " .. target .. " HTTP/1.1", "Host: " .. authority, "Upgrade: websocket",
    "Connection: Upgrade", "Sec-WebSocket-Version: 13" }
  local key = core.ws_key()
  lines[#lines + 1] = "Sec-WebSocket-Key: " .. key
  if opts.subprotocols and opts.subprotocols[1] then
    lines[#lines + 1] = "Sec-WebSocket-Protocol: " .. concat(opts.subprotocols, ", ")
  end
  for name, value in pairs(opts.headers or {}) do
    name, value = tostring(name), tostring(value)
    if find(name, "[^%w!#$%%&'*+%-.^_`|~]") or find(value, "[\r\n%z]") then
      error("connect: invalid header " .. name, 2)
    end
    lines[#lines + 1] = name .. ": " .. value
  end
  local tls = opts.tls
  if scheme == "wss" and tls == nil then tls = true end
  if scheme == "ws" then tls = nil end
  local conn, err, code = core.tcp.connect(host, port, { timeout = opts.timeout, tls = tls })
  if not conn then return nil, err, code end
  local ok
  ok, err, code = conn:write(concat(lines, "\r\n") .. "\r\n\r\n")
  if not ok then conn:close() return nil, err, code end
  local status_line
  status_line, err, code = conn:readline(8192)
  if not status_line then conn:close() return nil, err, code end
  local status = status_line:match("^HTTP/1%.1 (%d%d%d)")
  local headers, n = {}, 0
  while true do
    local line
    line, err, code = conn:readline(8192)
    if not line then conn:close() return nil, err, code end
    line = line:gsub("\r$", "")
    if line == "" then break end
    n = n + 1
    if n > 100 then return fail(conn, "too many header fields in the answer") end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then headers[lower(name)] = value end
  end
  if status ~= "101" then
    return fail(conn, "the server answered " .. (status_line:gsub("\r$", "")))
  end
  if not has_token(headers.upgrade, "websocket") or not has_token(headers.connection, "upgrade") then
    return fail(conn, "the answer does not upgrade to websocket")
  end
  if headers["sec-websocket-accept"] ~= core.ws_accept_value(key) then
    return fail(conn, "wrong Sec-WebSocket-Accept")
  end
  if headers["sec-websocket-extensions"] then
    return fail(conn, "the server named an extension the client did not offer")
  end
  local protocol = headers["sec-websocket-protocol"]
  if protocol then
    local offered = false
    for _, p in ipairs(opts.subprotocols or {}) do
      if p == protocol then offered = true end
    end
    if not offered then return fail(conn, "the server chose a subprotocol the client did not offer") end
  end
  return core.ws_client(conn, opts, protocol)
end

--- The HTTP handler of a WebSocket route: handler(ws, req) runs once the handshake is
-- answered; when it returns the connection closes (1000), when it fails with 1011 and the
-- error is logged as any handler's.
function M.route_handler(handler, opts)
  return function(req)
    local status, headers, body = refuse(req, opts)
    if status then return status, headers, body end
    local protocol = choose_protocol(req.headers["sec-websocket-protocol"], opts.subprotocols)
    local ext, bits
    if opts.compress ~= false then
      ext, bits = negotiate_deflate(req.headers["sec-websocket-extensions"])
    end
    local ws, err = core.ws_accept(req, req.headers["sec-websocket-key"], protocol, opts, ext, bits)
    if not ws then return nil, err end
    local ok, failure = xpcall(handler, traceback, ws, req)
    if not ok then
      ws:close(1011)
      error(failure, 0)
    end
    ws:close()
  end
end

return M
