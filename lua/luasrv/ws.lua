--- WebSocket routes (RFC 6455): the opening handshake's checks and the handler's run. The
-- connection itself (frames, pings, the close handshake) is C: src/ws.c.
--
--   app:websocket("/chat", function(ws, req) ... end, { subprotocols = { "chat" } })
local core = require "luasrv.core"

local type, error, pairs, ipairs, tostring = type, error, pairs, ipairs, tostring
local xpcall, traceback = xpcall, debug.traceback
local lower, gmatch, find = string.lower, string.gmatch, string.find

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
