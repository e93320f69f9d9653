--- The keep-alive pool of outbound HTTP connections, shared by srv.http.request
-- (luasrv.http_client) and srv.http.proxy (luasrv.http_proxy): idle luasrv.Conn objects per
-- (scheme, host, port, TLS options), newest last, per process; and the free response parsers.
local core = require "luasrv.core"

local type, tostring, pairs, ipairs, error = type, tostring, pairs, ipairs, error
local concat, remove = table.concat, table.remove
local tcp_connect, monotime, new_parser = core.tcp.connect, core.monotime,
  core.http_response_parser

local M = {}

M.max_idle = 16      -- idle connections kept per (scheme, host, port, TLS options)
M.idle_timeout = 4   -- seconds an idle connection is kept


local pools = {}
local stats = { created = 0, reused = 0, retried = 0, closed_idle = 0 }

local function tls_key(tls)
  if tls == nil or tls == false then return "" end
  if tls == true then return "tls" end
  local parts = {}
  for k, v in pairs(tls) do
    if type(v) == "table" then v = concat(v, ",") end
    parts[#parts + 1] = tostring(k) .. "=" .. tostring(v)
  end
  table.sort(parts)
  return concat(parts, ";")
end

local function pool_for(key)
  local p = pools[key]
  if not p then
    p = { idle = {}, since = {}, active = 0 }
    pools[key] = p
  end
  return p
end

-- Closes the idle connections of `p` that have waited longer than the idle timeout.
local function sweep(p, now)
  local idle, since = p.idle, p.since
  local limit = now - M.idle_timeout
  while since[1] and since[1] < limit do
    remove(idle, 1):close()
    remove(since, 1)
    stats.closed_idle = stats.closed_idle + 1
  end
end

local function pool_take(p, now)
  local idle = p.idle
  local n = #idle
  if n == 0 then return nil end
  if p.since[1] < now - M.idle_timeout then
    sweep(p, now)
    n = #idle
    if n == 0 then return nil end
  end
  local conn = idle[n]
  idle[n], p.since[n] = nil, nil
  return conn
end

local function pool_put(p, conn)
  p.active = p.active - 1
  local now = monotime()
  local idle, since = p.idle, p.since
  if since[1] and since[1] < now - M.idle_timeout then sweep(p, now) end
  local n = #idle
  if n >= M.max_idle then
    conn:close()
    return
  end
  idle[n + 1], since[n + 1] = conn, now
end

local function pool_drop(p, conn)
  p.active = p.active - 1
  conn:close()
end

--- srv.http.pool_stats() -> counters and, per pool key, its idle and active connections.
function M.pool_stats()
  local hosts, idle, active = {}, 0, 0
  local now = monotime()
  for key, p in pairs(pools) do
    sweep(p, now)
    hosts[key] = { idle = #p.idle, active = p.active }
    idle, active = idle + #p.idle, active + p.active
  end
  return { created = stats.created, reused = stats.reused, retried = stats.retried,
    closed_idle = stats.closed_idle, idle = idle, active = active, hosts = hosts }
end

--- srv.http.pool_configure{ max_idle =, idle_timeout = }: the pools' limits, for every pool
-- of the process from now on.
function M.configure(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'pool_configure' (table expected, got " .. type(opts) .. ")", 2)
  end
  local max_idle, idle_timeout = opts.max_idle, opts.idle_timeout
  if max_idle ~= nil then
    if math.type(max_idle) ~= "integer" or max_idle < 0 then
      error("bad option 'max_idle' (non-negative integer expected)", 2)
    end
    M.max_idle = max_idle
  end
  if idle_timeout ~= nil then
    if type(idle_timeout) ~= "number" or idle_timeout ~= idle_timeout or idle_timeout < 0 then
      error("bad option 'idle_timeout' (non-negative number of seconds expected)", 2)
    end
    M.idle_timeout = idle_timeout
  end
  return true
end

--- srv.http.pool_close(): closes every idle connection.
function M.close()
  for _, p in pairs(pools) do
    for _, conn in ipairs(p.idle) do conn:close() end
    p.idle, p.since = {}, {}
  end
end

--- A new connection for the pool `p` (counted as in use), to url's host and port: plain for
-- "http", TLS for "https" (with `tls`, true or a table of options). conn | nil, message, code
function M.connect(p, url, tls, timeout)
  if url.scheme == "https" and not tls then tls = true end
  if url.scheme == "http" then tls = nil end
  local conn, err, code = tcp_connect(url.host, url.port, { timeout = timeout, tls = tls })
  if not conn then return nil, err, code end
  stats.created = stats.created + 1
  p.active = p.active + 1
  return conn
end

local parsers = {} -- free response parsers, reused by later requests

function M.take_parser()
  local n = #parsers
  if n == 0 then return new_parser() end
  local parser = parsers[n]
  parsers[n] = nil
  return parser
end

function M.give_parser(parser)
  parsers[#parsers + 1] = parser
end

M.stats, M.pool_for, M.tls_key = stats, pool_for, tls_key
M.take, M.put, M.drop = pool_take, pool_put, pool_drop

return M
