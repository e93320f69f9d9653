--- srv.http.proxy(req, res, upstream [, opts]): forwards the request being handled to an
-- upstream server and sends its answer back, as nginx's proxy_pass does. Connections come
-- from the keep-alive pool srv.http.request uses (luasrv.http_pool); the relay itself is in C
-- (src/http_proxy.c: the request head from the parsed request, the answer parsed and streamed
-- to the client as it arrives, no byte through Lua). This module reads the options, takes and
-- returns pooled connections, and tries once more when a reused connection turns out closed.
local core = require "luasrv.core"
local pool = require "luasrv.http_pool"
local url_mod = require "luasrv.http_url"

local type, pairs, error, tostring = type, pairs, error, tostring
local floor = math.floor
local relay, monotime = core.http_relay, core.monotime
local take, put, drop = pool.take, pool.put, pool.drop
local pool_for, stats = pool.pool_for, pool.stats

local M = {}

local REUSED, XFF, KEEP_HOST = 1, 2, 4
local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true, TRACE = true, PUT = true,
  DELETE = true }
local DEFAULT_TIMEOUT_MS = 60000 -- each wait for the upstream (nginx's proxy_read_timeout)
local DEFAULT_CONNECT_TIMEOUT = 10

-- Upstream URLs parsed once: text -> { url, pool, host, prefix }.
local upstreams, nupstreams = {}, 0

local function upstream_of(text)
  if type(text) ~= "string" then
    error("bad argument #3 to 'proxy' (upstream URL expected, got " .. type(text) .. ")", 3)
  end
  local url, err = url_mod.parse(text)
  if not url then error("bad argument #3 to 'proxy' (" .. err .. ")", 3) end
  if url.authorization or url.target:find("?", 1, true) then
    error("bad argument #3 to 'proxy' (an upstream has no user, password or query)", 3)
  end
  local up = { url = url, pool = pool_for(url.pool_key), host = url.host_header,
    prefix = url.target ~= "/" and url.target:gsub("/$", "") or nil }
  if nupstreams >= 256 then upstreams, nupstreams = {}, 0 end
  upstreams[text], nupstreams = up, nupstreams + 1
  return up
end

-- The headers option with its names in lower case (as the core compares them).
local function lower_names(headers)
  if type(headers) ~= "table" then error("bad option 'headers' (table expected)", 4) end
  for name in pairs(headers) do
    if type(name) ~= "string" then error("bad option 'headers' (names must be strings)", 4) end
    if name:find("%u") then
      local t = {}
      for k, v in pairs(headers) do t[k:lower()] = v end
      return t
    end
  end
  return headers
end

local function seconds(v, name)
  if type(v) ~= "number" or v ~= v then
    error("bad option '" .. name .. "' (number of seconds expected)", 4)
  end
  return v
end

--- srv.http.proxy(req, res, upstream [, opts]) -> true | nil, message, code
function M.proxy(req, res, upstream, opts)
  local up = upstreams[upstream] or upstream_of(upstream)
  local p, tls, flags, headers = up.pool, nil, 0, nil
  local timeout, connect_timeout = DEFAULT_TIMEOUT_MS, DEFAULT_CONNECT_TIMEOUT
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #4 to 'proxy' (table expected, got " .. type(opts) .. ")", 2)
    end
    if opts.headers ~= nil then headers = lower_names(opts.headers) end
    if opts.forwarded_for then flags = flags + XFF end
    if opts.preserve_host then flags = flags + KEEP_HOST end
    if opts.timeout ~= nil then
      local t = seconds(opts.timeout, "timeout")
      timeout = t < 0 and -1 or floor(t * 1000)
    end
    if opts.connect_timeout ~= nil then
      connect_timeout = seconds(opts.connect_timeout, "connect_timeout")
    end
    tls = opts.tls
    if tls ~= nil then p = pool_for(up.url.pool_key .. pool.tls_key(tls)) end
  end
  local body, ok, err, code, retry, fatal
  for attempt = 1, 2 do
    local conn = attempt == 1 and take(p, monotime()) or nil
    local reused = 0
    if conn then
      stats.reused, p.active, reused = stats.reused + 1, p.active + 1, REUSED
    else
      conn, err, code = pool.connect(p, up.url, tls, connect_timeout)
      if not conn then break end
    end
    ok, err, code, retry, fatal = relay(conn, req, res, up.host, up.prefix, headers,
      body, flags + reused, timeout)
    if ok == false then -- the request has a body: it is read whole first (as nginx does)
      body, err, code = req:body()
      if not body then
        put(p, conn)
        break
      end
      ok, err, code, retry, fatal = relay(conn, req, res, up.host, up.prefix, headers,
        body, flags + reused, timeout)
    end
    if ok then
      if err then put(p, conn) else drop(p, conn) end
      return true
    end
    drop(p, conn)
    if fatal then
      error(code == "EINVAL" and err or "proxy: " .. up.url.origin .. ": " .. tostring(err), 2)
    end
    if not (retry and IDEMPOTENT[req.method]) then break end
    stats.retried = stats.retried + 1
  end
  return nil, err, code
end

return M
