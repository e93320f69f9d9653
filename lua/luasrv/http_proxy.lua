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
local relay = core.http_relay
local pool_for = pool.pool_for

local M = {}

local XFF, KEEP_HOST, FRESH = 2, 4, 8
local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true, TRACE = true, PUT = true,
  DELETE = true }
local DEFAULT_TIMEOUT_MS = 60000 -- each wait for the upstream (nginx's proxy_read_timeout)
local DEFAULT_CONNECT_TIMEOUT = 10

-- Upstream URLs parsed once: text -> { url, pool, host, prefix (false: none) }.
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
    prefix = url.target ~= "/" and url.target:gsub("/$", "") or false }
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

-- The options: the pool, the relay's flags, the headers to add and the wait in ms.
local function read_options(opts, up)
  if type(opts) ~= "table" then
    error("bad argument #4 to 'proxy' (table expected, got " .. type(opts) .. ")", 3)
  end
  -- (Tested for truth, not against nil: a test against nil costs a call in the VM.)
  local p, flags, headers, timeout = up.pool, 0, opts.headers, DEFAULT_TIMEOUT_MS
  if headers then headers = lower_names(headers) end
  if opts.forwarded_for then flags = flags + XFF end
  if opts.preserve_host then flags = flags + KEEP_HOST end
  local t = opts.timeout
  if t then
    t = seconds(t, "timeout")
    timeout = (t < 0 or t >= 1e9) and -1 or floor(t * 1000) -- (math.huge too: none)
  end
  if opts.connect_timeout then seconds(opts.connect_timeout, "connect_timeout") end
  if opts.tls then p = pool_for(up.url.pool_key .. pool.tls_key(opts.tls)) end
  return p, flags, headers, timeout
end

--- srv.http.proxy(req, res, upstream [, opts]) -> true | nil, message, code
function M.proxy(req, res, upstream, opts)
  local up = upstreams[upstream] or upstream_of(upstream)
  local p, flags, headers, timeout = up.pool, 0, nil, DEFAULT_TIMEOUT_MS
  if opts then p, flags, headers, timeout = read_options(opts, up) end
  local ok, err, code, retry, fatal = relay(p, nil, req, res, up.host, up.prefix, headers, nil,
    flags, timeout)
  if ok then return true end
  -- Then the cases the relay hands back: a body to read, a connection to make, a failure.
  local body, conn
  while true do
    if ok == false then
      if err == "body" then -- read whole first (as nginx does), within the server's limits
        body, err, code = req:body()
        if not body then return nil, err, code end
      else -- "connect": no idle connection (or a fresh one for a retry)
        local tls = opts ~= nil and opts.tls or nil
        conn, err, code = pool.connect(p, up.url, tls, opts ~= nil and opts.connect_timeout or
          DEFAULT_CONNECT_TIMEOUT)
        if not conn then return nil, err, code end
      end
    elseif fatal then
      error(code == "EINVAL" and err or "proxy: " .. up.url.origin .. ": " .. tostring(err), 2)
    elseif retry and flags < FRESH and IDEMPOTENT[req.method] then
      pool.count_retry()
      flags = flags + FRESH -- once, and on a new connection
    else
      return nil, err, code
    end
    ok, err, code, retry, fatal = relay(p, conn, req, res, up.host, up.prefix, headers, body,
      flags, timeout)
    if ok then return true end
    conn = nil
  end
end

return M
