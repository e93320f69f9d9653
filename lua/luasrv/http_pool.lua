--- The keep-alive pool of outbound HTTP connections, shared by srv.http.request
-- (luasrv.http_client) and srv.http.proxy (luasrv.http_proxy): idle luasrv.Conn objects per
-- (scheme, host, port, TLS options), per process; and the free response parsers.
-- A pool is a luasrv.HTTPPool (src/http_pool.c): taking and giving back are in C, which the
-- proxy's relay calls without coming back to Lua.
local core = require "luasrv.core"

local type, tostring, pairs, error = type, tostring, pairs, error
local concat = table.concat
local tcp_connect, new_parser, counters = core.tcp.connect, core.http_response_parser,
  core.http_pool_counters
local new_pool, pool_info, pool_added = core.http_pool_new, core.http_pool_info,
  core.http_pool_added

local M = {}

local pools = {}

--- The options of an https connection as a string for the pool key ("" for none).
function M.tls_key(tls)
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

--- The pool for a key (made on first use).
function M.pool_for(key)
  local p = pools[key]
  if not p then
    p = new_pool()
    pools[key] = p
  end
  return p
end

--- take(p) -> an idle connection (now in use) | nil; put(p, conn [, reusable]): the
-- connection is no longer in use, kept idle when it can be (reusable defaults to true).
M.take, M.put = core.http_pool_take, core.http_pool_put

--- drop(p, conn): the connection is no longer in use and is closed.
function M.drop(p, conn)
  M.put(p, conn, false)
end

--- srv.http.pool_stats() -> counters and, per pool key, its idle and active connections.
function M.pool_stats()
  local hosts, idle, active = {}, 0, 0
  for key, p in pairs(pools) do
    local n, in_use = pool_info(p)
    hosts[key] = { idle = n, active = in_use }
    idle, active = idle + n, active + in_use
  end
  local created, reused, retried, closed_idle = counters()
  return { created = created, reused = reused, retried = retried, closed_idle = closed_idle,
    idle = idle, active = active, hosts = hosts }
end

--- Counts a request tried again on a new connection.
function M.count_retry()
  counters("retried")
end

local max_idle, idle_timeout = 16, 4

--- srv.http.pool_configure{ max_idle =, idle_timeout = }: the pools' limits, for every pool
-- of the process from now on.
function M.configure(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'pool_configure' (table expected, got " .. type(opts) .. ")", 2)
  end
  local new_max, new_timeout = opts.max_idle, opts.idle_timeout
  if new_max ~= nil then
    if math.type(new_max) ~= "integer" or new_max < 0 then
      error("bad option 'max_idle' (non-negative integer expected)", 2)
    end
    max_idle = new_max
  end
  if new_timeout ~= nil then
    if type(new_timeout) ~= "number" or new_timeout ~= new_timeout or new_timeout < 0 then
      error("bad option 'idle_timeout' (non-negative number of seconds expected)", 2)
    end
    idle_timeout = new_timeout
  end
  core.http_pool_configure(max_idle, idle_timeout)
  return true
end

--- srv.http.pool_close(): closes every idle connection.
function M.close()
  for _, p in pairs(pools) do core.http_pool_close(p) end
end

--- A new connection for the pool `p` (counted as in use), to url's host and port: plain for
-- "http", TLS for "https" (with `tls`, true or a table of options). conn | nil, message, code
function M.connect(p, url, tls, timeout)
  if url.scheme == "https" and not tls then tls = true end
  if url.scheme == "http" then tls = nil end
  local conn, err, code = tcp_connect(url.host, url.port, { timeout = timeout, tls = tls })
  if not conn then return nil, err, code end
  pool_added(p)
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

return M
