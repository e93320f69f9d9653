--- Helpers for testing handlers without a network.
--   local t = require "luasrv.test"
--   local r = t.request(app, { method = "GET", path = "/users/1" })
--   assert(r.status == 200 and r.headers["content-type"] and r.body)
-- Requests go through the same parser, limits, router and response code as a socket would,
-- so what passes here behaves the same on the wire.
local core = require "luasrv.core"
local http = require "luasrv.http"

local M = {}

local concat, pairs, type, tostring, tonumber = table.concat, pairs, type, tostring, tonumber
local find, sub, lower = string.find, string.sub, string.lower
local json_encode = core.json.encode

local function encode_request(opts)
  local method = opts.method or "GET"
  local path = opts.path or "/"
  if opts.query then
    local parts = {}
    for k, v in pairs(opts.query) do
      parts[#parts + 1] = tostring(k) .. "=" .. tostring(v)
    end
    path = path .. (find(path, "?", 1, true) and "&" or "?") .. concat(parts, "&")
  end
  local body = opts.body or ""
  if type(body) == "table" then
    local ok, encoded = pcall(json_encode, body)
    if not ok then error(encoded, 3) end -- at t.request's caller
    body = encoded
  end
  local lines = { ("%s %s HTTP/1.1"):format(method, path) }
  local headers = opts.headers or {}
  local has = {}
  for name, value in pairs(headers) do
    has[lower(name)] = true
    lines[#lines + 1] = name .. ": " .. tostring(value)
  end
  if not has.host then lines[#lines + 1] = "Host: test" end
  if #body > 0 and not has["content-length"] and not has["transfer-encoding"] then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  lines[#lines + 1] = "Connection: close"
  return concat(lines, "\r\n") .. "\r\n\r\n" .. body
end

local function dechunk(s)
  local out, pos = {}, 1
  while true do
    local eol = find(s, "\r\n", pos, true)
    if not eol then return nil, "truncated chunked body" end
    local size = tonumber(sub(s, pos, eol - 1):match("^%x+"), 16)
    if not size then return nil, "bad chunk size" end
    if size == 0 then return concat(out) end
    out[#out + 1] = sub(s, eol + 2, eol + 1 + size)
    pos = eol + 4 + size
  end
end

--- Parses one raw HTTP/1.1 response: { status, reason, headers (lower-case names; repeats
-- joined with ", "), body }.
function M.parse_response(raw)
  local head_end = find(raw, "\r\n\r\n", 1, true)
  if not head_end then return nil, "no complete response head" end
  local head = sub(raw, 1, head_end - 1)
  local status, reason = head:match("^HTTP/1%.[01] (%d%d%d) ?([^\r]*)")
  if not status then return nil, "bad status line" end
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
    name = lower(name)
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  local body = sub(raw, head_end + 4)
  if headers["transfer-encoding"] == "chunked" then
    local err
    body, err = dechunk(body)
    if not body then return nil, err end
  elseif headers["content-length"] then
    body = sub(body, 1, tonumber(headers["content-length"]))
  end
  return { status = tonumber(status), reason = reason, headers = headers, body = body }
end

--- t.request(app, opts) -> { status, headers, body }. opts: method, path, query (table),
-- headers (table), body (string, or a table sent as JSON), and listener limits (max_body, ...).
-- Runs the app as srv.http.listen would; outside a task it runs one with srv.run.
function M.request(app, opts)
  opts = opts or {}
  local handler = http.as_handler(app, 2)
  local raw = encode_request(opts)
  local function go()
    return core.http_inject(handler, raw, opts)
  end
  local ok, response = pcall(core.run, go)
  if not ok then error(response, 2) end
  local parsed, err = M.parse_response(response)
  if not parsed then error("unexpected response (" .. err .. "): " .. response, 2) end
  parsed.raw = response
  return parsed
end

--- t.raw(app, bytes [, limits]) -> the raw response bytes for raw request bytes.
function M.raw(app, bytes, limits)
  local handler = http.as_handler(app, 2)
  return core.run(function() return core.http_inject(handler, bytes, limits) end)
end

return M
