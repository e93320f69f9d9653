--- luasrv.redis: a Redis client on srv.tcp (RESP2, and RESP3 when asked for).
--   local redis = require "luasrv.redis"
--   local r = assert(redis.connect({ host = "127.0.0.1", port = 6379 }))
--   r:set("k", "v"); local v = r:get("k"); r:release()
-- Every command is a method (r:hset, r:zadd, ...) or r:call(name, ...). Replies become Lua
-- values; an error reply is `nil, message, code` and the connection stays usable; an I/O or
-- protocol failure is `nil, message, code` too, and closes the connection.
-- The protocol is in luasrv.redis.resp, subscriptions in luasrv.redis.subscription.
local core = require "luasrv.core"
local resp = require "luasrv.redis.resp"
local subscription = require "luasrv.redis.subscription"
local mux = require "luasrv.redis.mux"

local type, tostring, tonumber, pairs, pcall, error = type, tostring, tonumber, pairs, pcall, error
local setmetatable, getmetatable, select = setmetatable, getmetatable, select
local concat, match = table.concat, string.match
local tointeger = math.tointeger
local connect_tcp, monotime = core.tcp.connect, core.monotime
local encode, receive, read_replies, broken = resp.encode, resp.receive, resp.read_replies, resp.broken
local wire, alive = resp.wire, resp.alive
local misuse, error_code, Failure, ErrorReply = resp.misuse, resp.error_code, resp.Failure, resp.ErrorReply
local null = resp.null

local M = {}

--- A nil inside an array reply (and a RESP3 null there): the JSON null light userdata.
M.null = null
M.is_error = resp.is_error

local DEFAULT_MAX_BULK = 512 * 1024 * 1024 -- Redis's own proto-max-bulk-len
local DEFAULT_MAX_ELEMENTS = 16 * 1024 * 1024

------------------------------------------------------------------------------------------
-- Clients.
------------------------------------------------------------------------------------------

local methods = {}
local Client = { __index = methods, __name = "luasrv.redis.Client" }

-- The state behind a client (and what the pool keeps): the connection, the reader's buffer,
-- and what makes a connection unfit for reuse.
local function state_of(self, what)
  local c = self._c
  if c == nil then
    misuse("redis: " .. what .. " on a client that was released (or turned into a subscription)")
  end
  return c
end

-- Commands that change the connection's state, and how the client follows them.
local tracked = {
  MULTI = true, EXEC = true, DISCARD = true, WATCH = true, UNWATCH = true, SELECT = true,
  SUBSCRIBE = true, PSUBSCRIBE = true, SSUBSCRIBE = true, MONITOR = true, QUIT = true,
  RESET = true,
}

local function track(c, cmd, ok, ...)
  if not ok then return end
  if cmd == "MULTI" then
    c.in_multi = true
  elseif cmd == "EXEC" or cmd == "DISCARD" then
    c.in_multi, c.watching = false, false
  elseif cmd == "WATCH" then
    c.watching = true
  elseif cmd == "UNWATCH" then
    c.watching = false
  elseif cmd == "SELECT" then
    c.db_now = tointeger(tonumber((...)))
  elseif cmd == "RESET" then
    c.in_multi, c.watching, c.db_now = false, false, 0
  end
end

-- Sends one command and reads its answer.
local function command(c, cmd, ...)
  local ok, err, code = resp.send(c, cmd, ...)
  if not ok then return nil, err, code end
  local v
  ok, v, code = receive(c)
  if not ok then return nil, v, code end
  if getmetatable(v) == ErrorReply then
    return nil, v.message, error_code(v.message)
  end
  return v
end

-- Commands a multiplexed client refuses: they change or block the shared connection.
local not_multiplexed = {
  BLPOP = true, BRPOP = true, BRPOPLPUSH = true, BLMOVE = true, BLMPOP = true, BZPOPMIN = true,
  BZPOPMAX = true, BZMPOP = true, WAIT = true, WAITAOF = true,
}
for name in pairs(tracked) do not_multiplexed[name] = true end

local function mux_refuse(cmd)
  misuse("redis: " .. cmd .. " cannot be sent on a multiplexed client (use one without multiplex)")
end

-- A command on a multiplexed client.
local function mux_call(prep, cmd, ...)
  if not_multiplexed[cmd] then mux_refuse(cmd) end
  local v, err, code = mux.request(prep.key, prep.dial, nil, wire(cmd, ...))
  if err ~= nil then return nil, err, code end
  if getmetatable(v) == ErrorReply then return nil, v.message, error_code(v.message) end
  return v
end

local function call(self, cmd, ...)
  local c = self._c
  if c == nil then
    local prep = self._mux
    if prep ~= nil then return mux_call(prep, cmd, ...) end
    state_of(self, cmd:lower())
  end
  if tracked[cmd] then
    if cmd == "SUBSCRIBE" or cmd == "PSUBSCRIBE" or cmd == "SSUBSCRIBE" or cmd == "MONITOR" then
      misuse("redis: use r:subscribe() or r:psubscribe() for " .. cmd)
    end
    local v, err, code = command(c, cmd, ...)
    track(c, cmd, v ~= nil or err == nil, ...)
    if cmd == "QUIT" then broken(c) end
    return v, err, code
  end
  return command(c, cmd, ...)
end

-- Any other method name is a command: r:hset(...) is r:call("HSET", ...) (r:call(name, ...)
-- -> the reply | nil (a nil reply) | nil, message, code). The function is made once per name
-- and kept in `methods`.
resp.command_methods(methods, call)

------------------------------------------------------------------------------------------
-- Pipelines.
------------------------------------------------------------------------------------------

local Pipeline = {}

-- Adds one command to a pipeline.
local not_pipelined = { SUBSCRIBE = true, PSUBSCRIBE = true, SSUBSCRIBE = true, MONITOR = true }

local function queue(p, cmd, ...)
  if not_pipelined[cmd] then misuse("redis: " .. cmd .. " cannot be pipelined") end
  if not_multiplexed[cmd] and p._mux then mux_refuse(cmd) end
  local n = p._n + 1
  p._out[n] = wire(cmd, ...)
  p._n = n
  if tracked[cmd] then
    local t = p._tracked
    if t == nil then
      t = {}
      p._tracked = t
    end
    t[n] = { cmd, ... }
  end
  return p
end

local pipeline_methods = resp.command_methods({}, queue)
Pipeline.__index = pipeline_methods

--- r:pipeline(fn, ...) -> results, n | nil, message, code. fn(p, ...) queues commands on p
-- (p:set(...), p:call(...)); they go in one write, then every reply is read. results[i] is
-- the i-th reply, redis.null for a nil and an error object (redis.is_error) for an error
-- reply. The arguments after fn are passed on to it (so fn need not be a new closure).
function methods.pipeline(self, fn, ...)
  local prep = self._mux
  local c = prep == nil and state_of(self, "pipeline")
  if type(fn) ~= "function" then
    misuse("bad argument #1 to 'pipeline' (function expected, got " .. type(fn) .. ")")
  end
  local p = setmetatable({ _out = {}, _n = 0, _mux = prep ~= nil }, Pipeline)
  fn(p, ...)
  local n = p._n
  if n == 0 then return {}, 0 end
  if prep ~= nil then
    local wire_text = n == 1 and p._out[1] or concat(p._out)
    local results, err, code = mux.request(prep.key, prep.dial, n, wire_text)
    if results == nil then return nil, err, code end
    return results, n
  end
  if c.closed then return nil, "closed", "ECLOSED" end
  local ok, err, code = c.conn:write(concat(p._out))
  if not ok then
    broken(c)
    return nil, err, code
  end
  local results
  ok, results = pcall(read_replies, c, p._n)
  if not ok then
    broken(c)
    if getmetatable(results) == Failure then return nil, results.message, results.code end
    error(results, 0)
  end
  for i, t in pairs(p._tracked or {}) do
    track(c, t[1], getmetatable(results[i]) ~= ErrorReply, table.unpack(t, 2))
    if t[1] == "QUIT" then broken(c) end
  end
  return results, p._n
end

------------------------------------------------------------------------------------------
-- Connecting, the pool, releasing.
------------------------------------------------------------------------------------------

--- redis.parse_url("redis://[user:password@]host[:port][/db]" | "rediss://..." |
-- "unix:///path/to.sock[?db=N]") -> options table, or nil, message.
function M.parse_url(url)
  if type(url) ~= "string" then return nil, "redis: URL expected" end
  local unix_path = match(url, "^unix://(/[^?]*)")
  if unix_path then
    local db = match(url, "[?&]db=(%d+)")
    return { path = unix_path, db = db and tonumber(db) or 0 }
  end
  local scheme, rest = match(url, "^(rediss?)://(.*)$")
  if not scheme then return nil, "redis: not a redis:// URL: " .. url end
  local opts = { tls = scheme == "rediss" or nil }
  local auth, hostpart = match(rest, "^(.*)@([^@]*)$")
  if not auth then hostpart = rest end
  if auth then
    local user, pass = match(auth, "^([^:]*):(.*)$")
    if user then
      opts.username = user ~= "" and user or nil
      opts.password = pass
    else
      opts.password = auth
    end
  end
  local hostport, db = match(hostpart, "^([^/]*)/?(%d*)$")
  if not hostport then return nil, "redis: bad URL: " .. url end
  local host, port = match(hostport, "^%[(.*)%]:?(%d*)$")
  if not host then host, port = match(hostport, "^([^:]*):?(%d*)$") end
  opts.host = host ~= "" and host or "127.0.0.1"
  opts.port = port ~= "" and tonumber(port) or 6379
  opts.db = db ~= "" and tonumber(db) or 0
  return opts
end

-- pools[key] = { states..., n = count }; one table per Lua state, so per worker.
local pools = {}
local DEFAULT_POOL_SIZE, DEFAULT_POOL_IDLE = 100, 30
local PROBE_AFTER = 1 -- seconds idle before a pooled connection is checked when taken

local function pool_key(o)
  return concat({ o.path or "", o.host or "", tostring(o.port or ""), tostring(o.db or 0),
    o.username or "", o.password or "", tostring(o.resp or 2), o.tls and "tls" or "" }, "\0")
end

-- A state from the pool, or nil; closes the ones idle for too long, and checks the ones
-- idle for a while (a busy pool's connections are not checked: they were just in use).
local function pool_take(key)
  local pool = pools[key]
  if not pool then return nil end
  local now = monotime()
  while pool.n > 0 do
    local c = pool[pool.n]
    pool[pool.n] = nil
    pool.n = pool.n - 1
    if now - c.idle_since <= c.pool_idle and not c.closed and
        (now - c.idle_since < PROBE_AFTER or alive(c)) then
      return c
    end
    broken(c)
  end
  return nil
end

local function opt_type(opts, name, want)
  local v = opts[name]
  if v ~= nil and type(v) ~= want then
    misuse(("bad option '%s' to 'connect' (%s expected, got %s)"):format(name, want, type(v)))
  end
  return v
end

-- The settings of this connect call, also for a connection taken from the pool.
local function configure(c, o)
  c.max_bulk = o.max_bulk or DEFAULT_MAX_BULK
  c.max_elements = o.max_elements or DEFAULT_MAX_ELEMENTS
  c.pool_size = o.pool_size or DEFAULT_POOL_SIZE
  c.pool_idle = o.pool_idle or DEFAULT_POOL_IDLE
  local timeout = o.timeout == nil and 30 or o.timeout
  if c.timeout ~= timeout then
    c.timeout = timeout
    c.conn:settimeout(timeout)
  end
end

local function new_client(c)
  return setmetatable({ _c = c }, Client)
end

-- Authenticates and selects the database, in one round trip.
local function handshake(c, o)
  local out, k = {}, 1
  local expect = 0
  if o.resp == 3 then
    if o.password then
      k = encode(out, k, "HELLO", "3", "AUTH", o.username or "default", o.password)
    else
      k = encode(out, k, "HELLO", "3")
    end
    expect = expect + 1
  elseif o.password then
    if o.username then
      k = encode(out, k, "AUTH", o.username, o.password)
    else
      k = encode(out, k, "AUTH", o.password)
    end
    expect = expect + 1
  end
  if o.db and o.db ~= 0 then
    encode(out, k, "SELECT", o.db)
    expect = expect + 1
  end
  if expect == 0 then return true end
  local ok, err, code = c.conn:write(concat(out))
  if not ok then return nil, err, code end
  for _ = 1, expect do
    local v
    ok, v, code = receive(c)
    if not ok then return nil, v, code end
    if getmetatable(v) == ErrorReply then return nil, v.message, error_code(v.message) end
  end
  return true
end

-- Checks and completes the options of a connect call (misuse raises at the user's line).
local function normalize(opts)
  local o = {}
  if opts.url ~= nil then
    local parsed, err = M.parse_url(opts.url)
    if not parsed then misuse("bad option 'url' to 'connect' (" .. err .. ")") end
    o = parsed
  end
  for k, v in pairs(opts) do
    if k ~= "url" then o[k] = v end
  end
  opt_type(o, "host", "string"); opt_type(o, "path", "string")
  opt_type(o, "password", "string"); opt_type(o, "username", "string")
  opt_type(o, "db", "number"); opt_type(o, "timeout", "number")
  opt_type(o, "max_bulk", "number"); opt_type(o, "max_elements", "number")
  opt_type(o, "pool_size", "number"); opt_type(o, "pool_idle", "number")
  if o.resp ~= nil and o.resp ~= 2 and o.resp ~= 3 then
    misuse("bad option 'resp' to 'connect' (2 or 3 expected)")
  end
  if o.path == nil then
    o.host = o.host or "127.0.0.1"
    o.port = o.port or 6379
    if math.type(o.port) ~= "integer" then
      misuse("bad option 'port' to 'connect' (integer expected, got " .. type(o.port) .. ")")
    end
  end
  o.db = o.db or 0
  o.resp = o.resp or 2
  return o
end

-- An options table given to connect again (the usual case: one table per app) is not checked
-- again as long as none of its fields changed: prepared[opts] keeps what they were.
local prepared = setmetatable({}, { __mode = "k" })

local function same_options(opts, seen)
  return opts.host == seen.host and opts.port == seen.port and opts.path == seen.path
    and opts.db == seen.db and opts.password == seen.password and opts.username == seen.username
    and opts.timeout == seen.timeout and opts.tls == seen.tls and opts.resp == seen.resp
    and opts.url == seen.url and opts.max_bulk == seen.max_bulk
    and opts.max_elements == seen.max_elements and opts.pool_size == seen.pool_size
    and opts.pool_idle == seen.pool_idle and opts.multiplex == seen.multiplex
end

-- A new connection, authenticated and on its database: its state, or nil, message, code.
local function dial(o, key)
  local conn, err, code
  if o.path then
    conn, err, code = connect_tcp({ path = o.path, timeout = o.timeout })
  else
    conn, err, code = connect_tcp({ host = o.host, port = o.port, timeout = o.timeout, tls = o.tls })
  end
  if not conn then return nil, err, code end
  local c = {
    conn = conn, buf = "", pos = 1, closed = false, key = key, db = o.db, db_now = o.db,
    in_multi = false, watching = false, subscribed = false,
  }
  configure(c, o)
  local ok
  ok, err, code = handshake(c, o)
  if not ok then
    broken(c)
    return nil, err, code
  end
  return c
end

--- redis.connect(opts | url) -> client | nil, message, code.
-- opts: host (127.0.0.1), port (6379), path (a Unix socket instead), password, username, db (0),
-- timeout (seconds, 30), tls (true or srv.tcp.connect's TLS table), resp (2 or 3), max_bulk,
-- max_elements, pool_size (100), pool_idle (seconds, 30), url, multiplex (one shared connection
-- per worker, see luasrv.redis.mux).
function M.connect(opts)
  if type(opts) == "string" then opts = { url = opts } end
  if type(opts) ~= "table" then
    misuse("bad argument #1 to 'connect' (table or URL expected, got " .. type(opts) .. ")")
  end
  local prep = prepared[opts]
  if prep == nil or not same_options(opts, prep.seen) then
    local o = normalize(opts)
    local seen = {}
    for k, v in pairs(opts) do seen[k] = v end
    local key = pool_key(o)
    prep = { o = o, key = key, seen = seen,
             dial = function() return dial(o, key) end }
    prepared[opts] = prep
  end
  local o = prep.o
  local key = prep.key
  if o.multiplex then
    return setmetatable({ _mux = prep }, Client)
  end
  local c = pool_take(key)
  if c then
    configure(c, o)
    return new_client(c)
  end
  local err, code
  c, err, code = dial(o, key)
  if not c then return nil, err, code end
  return new_client(c)
end

--- r:release() -> true: the connection goes back to the pool when it is fit for reuse (open,
-- nothing unread, no transaction or WATCH, its own database, not subscribed), else it is
-- closed. The client must not be used afterwards.
function methods.release(self)
  if self._mux ~= nil then
    self._mux = nil
    return true
  end
  local c = state_of(self, "release")
  self._c = nil
  if c.closed or c.in_multi or c.watching or c.subscribed or c.db_now ~= c.db
      or c.pos <= #c.buf then
    broken(c)
    return true
  end
  local pool = pools[c.key]
  if not pool then
    pool = { n = 0 }
    pools[c.key] = pool
  end
  -- Drop the ones idle for too long (the oldest are at the bottom).
  local now = monotime()
  if pool.n > 0 and now - pool[1].idle_since > c.pool_idle then
    local keep = { n = 0 }
    for i = 1, pool.n do
      local other = pool[i]
      if now - other.idle_since > other.pool_idle then
        broken(other)
      else
        keep.n = keep.n + 1
        keep[keep.n] = other
      end
    end
    pool = keep
    pools[c.key] = pool
  end
  if pool.n >= c.pool_size then
    broken(c)
    return true
  end
  c.idle_since = now
  c.buf, c.pos = "", 1
  pool.n = pool.n + 1
  pool[pool.n] = c
  return true
end

--- r:close() -> true: closes the connection (it does not go to the pool).
function methods.close(self)
  self._mux = nil -- a multiplexed client leaves the shared connection to the others
  return resp.close_owned(self)
end

function Client.__tostring(self)
  local c = self._c
  local state = self._mux and "multiplexed" or c == nil and "released" or c.closed and "closed" or "open"
  return "luasrv.redis.Client (" .. state .. ")"
end

Client.__close = methods.close

local function subscribe(self, cmd, what, ...)
  if self._mux ~= nil and not_multiplexed[cmd] then mux_refuse(cmd) end
  local c = state_of(self, what)
  if c.in_multi then misuse("redis: " .. what .. " inside MULTI") end
  if select("#", ...) == 0 then misuse("bad argument #1 to '" .. what .. "' (a channel name expected)") end
  self._c = nil
  return subscription.new(c, cmd, what, ...)
end

--- r:subscribe(channel, ...) / r:psubscribe(pattern, ...) -> a subscription | nil, message,
-- code. The connection now belongs to the subscription (the client is used up); the call
-- returns once the server has confirmed every channel.
function methods.subscribe(self, ...) return subscribe(self, "SUBSCRIBE", "subscribe", ...) end
function methods.psubscribe(self, ...) return subscribe(self, "PSUBSCRIBE", "psubscribe", ...) end

return M
