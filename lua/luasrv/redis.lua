--- luasrv.redis: a Redis client on srv.tcp (RESP2, and RESP3 when asked for).
--   local redis = require "luasrv.redis"
--   local r = assert(redis.connect({ host = "127.0.0.1", port = 6379 }))
--   r:set("k", "v"); local v = r:get("k"); r:release()
-- Every command is a method (r:hset, r:zadd, ...) or r:call(name, ...). Replies become Lua
-- values; an error reply is `nil, message, code` and the connection stays usable; an I/O or
-- protocol failure is `nil, message, code` too, and closes the connection.
local core = require "luasrv.core"

local type, tostring, tonumber, select, error, pcall = type, tostring, tonumber, select, error, pcall
local setmetatable, getmetatable, rawset = setmetatable, getmetatable, rawset
local concat, upper, find, sub, byte, match = table.concat, string.upper, string.find,
  string.sub, string.byte, string.match
local tointeger, huge = math.tointeger, math.huge
local connect_tcp, monotime = core.tcp.connect, core.monotime

local M = {}

--- A nil inside an array reply (and a RESP3 null there): the JSON null light userdata.
local null = core.json.null
M.null = null

local DEFAULT_MAX_BULK = 512 * 1024 * 1024 -- Redis's own proto-max-bulk-len
local DEFAULT_MAX_ELEMENTS = 16 * 1024 * 1024
local LINE_MAX = 64 * 1024                 -- a status, error or length line
local MAX_DEPTH = 32                       -- nesting of aggregate replies

-- Error replies inside arrays (EXEC, pipelines) are tables with this metatable.
local ErrorReply = {
  __name = "luasrv.redis.Error",
  __tostring = function(e) return e.message end,
}

--- redis.is_error(v) -> the message of an error reply found in a pipeline or EXEC result, or nil.
function M.is_error(v)
  if getmetatable(v) == ErrorReply then return v.message end
  return nil
end

local function error_reply(message)
  return setmetatable({ message = message }, ErrorReply)
end

-- The code of an error reply: its first word ("ERR", "WRONGTYPE", "NOAUTH", ...).
local function error_code(message)
  return match(message, "^(%u+)") or "ERR"
end

------------------------------------------------------------------------------------------
-- The reader: a buffer of input not yet parsed (c.buf from c.pos on), filled from the
-- connection. Failures are raised as a `failure` table and caught where a reply is read.
------------------------------------------------------------------------------------------

local Failure = {}

-- This file's name as debug.getinfo reports it, to find the user's frame for misuse errors.
local THIS_SOURCE = debug.getinfo(1, "S").source

--- Raises `message` at the first caller outside this module (the user's file:line), however
-- deep inside the module the misuse was found.
local function misuse(message)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if info == nil or info.source ~= THIS_SOURCE then break end
    level = level + 1
  end
  error(message, level)
end

local function fail(message, code)
  error(setmetatable({ message = message, code = code }, Failure), 0)
end

local function protocol_error(what)
  fail("redis: protocol error: " .. what, "EPROTO")
end

-- Appends the next input to the buffer (dropping what is parsed), or fails.
local function fill(c)
  local data, err, code = c.conn:read()
  if not data then fail(err, code) end
  local buf, pos = c.buf, c.pos
  if pos > #buf then
    c.buf = data
  else
    c.buf = sub(buf, pos) .. data
  end
  c.pos = 1
end

-- The next line starting at c.pos, which moves past it: its first byte (the reply type,
-- nil for an empty line) and the rest without the CRLF.
local function read_line(c)
  local buf, pos = c.buf, c.pos
  local e = find(buf, "\r\n", pos, true)
  while not e do
    if #buf - pos + 1 > LINE_MAX then protocol_error("line too long") end
    local from = #buf - pos -- the CR may already be there
    fill(c)
    buf, pos = c.buf, c.pos
    e = find(buf, "\r\n", from > 0 and from or 1, true)
  end
  c.pos = e + 2
  if e == pos then return nil, "" end
  return byte(buf, pos), sub(buf, pos + 1, e - 1)
end

-- Lengths already seen ("64" -> 64), so that the usual ones cost one table look-up.
local KNOWN_LENGTHS_MAX = 65536
local known_lengths = { ["-1"] = -1, ["0"] = 0 }

-- A length line: a non-negative decimal integer, or -1 (null) when allowed.
local function length(line, what, limit)
  local n = known_lengths[line]
  if n == nil then
    if not find(line, "^%-?%d+$") or #line > 19 then
      protocol_error("bad " .. what .. " length '" .. sub(line, 1, 40) .. "'")
    end
    n = tointeger(tonumber(line))
    if n == nil or n < -1 then protocol_error("bad " .. what .. " length '" .. line .. "'") end
    if n < KNOWN_LENGTHS_MAX and find(line, "^[1-9]") then known_lengths[line] = n end
  end
  if n > limit then
    protocol_error(what .. " of " .. n .. " bytes is over the limit of " .. limit)
  end
  return n
end

-- n bytes followed by CRLF.
local function read_bytes(c, n)
  local buf, pos = c.buf, c.pos
  local have = #buf - pos + 1
  local s
  if have >= n + 2 then
    s = sub(buf, pos, pos + n - 1)
    if byte(buf, pos + n) ~= 13 or byte(buf, pos + n + 1) ~= 10 then
      protocol_error("bulk string not followed by CRLF")
    end
    c.pos = pos + n + 2
    return s
  end
  -- Not all there: let the connection gather the rest in one piece.
  local rest, err, code = c.conn:read(n + 2 - have)
  if not rest then fail(err, code) end
  s = sub(buf, pos) .. rest
  c.buf, c.pos = "", 1
  if sub(s, -2) ~= "\r\n" then protocol_error("bulk string not followed by CRLF") end
  return sub(s, 1, n)
end

local read_reply

local function read_elements(c, n, depth)
  if n > c.max_elements then
    protocol_error("aggregate of " .. n .. " elements is over the limit of " .. c.max_elements)
  end
  local t = {}
  for i = 1, n do
    local v = read_reply(c, depth + 1)
    if v == nil then v = null end
    t[i] = v
  end
  return t
end

local function read_map(c, n, depth, as_set)
  if n > c.max_elements then
    protocol_error("aggregate of " .. n .. " elements is over the limit of " .. c.max_elements)
  end
  local t = {}
  for _ = 1, n do
    local k = read_reply(c, depth + 1)
    if k == nil then k = null end
    if as_set then
      t[k] = true
    else
      local v = read_reply(c, depth + 1)
      if v == nil then v = null end
      t[k] = v
    end
  end
  return t
end

local function read_double(line)
  if line == "inf" then return huge elseif line == "-inf" then return -huge end
  if line == "nan" or line == "-nan" then return 0 / 0 end
  local v = find(line, "^[-+]?[%d.]+[eE]?[-+]?%d*$") and tonumber(line)
  if not v then protocol_error("bad double '" .. sub(line, 1, 40) .. "'") end
  return v + 0.0
end

-- One reply: a string, an integer, a table, true/false, a float, an ErrorReply, or nil for
-- a null. The second result is true for a RESP3 push.
function read_reply(c, depth)
  if depth > MAX_DEPTH then protocol_error("replies nested deeper than " .. MAX_DEPTH) end
  local t, rest = read_line(c)
  if t == 36 then -- $ bulk string
    local n = length(rest, "bulk string", c.max_bulk)
    if n < 0 then return nil end
    return read_bytes(c, n)
  elseif t == 43 then -- + simple string
    return rest
  elseif t == 58 then -- : integer
    local v = find(rest, "^%-?%d+$") and tointeger(tonumber(rest))
    if not v then protocol_error("bad integer '" .. sub(rest, 1, 40) .. "'") end
    return v
  elseif t == 42 then -- * array
    local n = length(rest, "array", huge)
    if n < 0 then return nil end
    return read_elements(c, n, depth)
  elseif t == 45 then -- - error
    return error_reply(rest)
  elseif t == 37 then -- % map (RESP3)
    return read_map(c, length(rest, "map", huge), depth, false)
  elseif t == 126 then -- ~ set (RESP3)
    return read_map(c, length(rest, "set", huge), depth, true)
  elseif t == 95 then -- _ null (RESP3)
    if rest ~= "" then protocol_error("bad null") end
    return nil
  elseif t == 35 then -- # boolean (RESP3)
    if rest == "t" then return true elseif rest == "f" then return false end
    protocol_error("bad boolean '" .. sub(rest, 1, 40) .. "'")
  elseif t == 44 then -- , double (RESP3)
    return read_double(rest)
  elseif t == 40 then -- ( big number (RESP3), kept as its decimal string
    if not find(rest, "^%-?%d+$") then protocol_error("bad big number") end
    return rest
  elseif t == 33 then -- ! blob error (RESP3)
    local n = length(rest, "blob error", c.max_bulk)
    if n < 0 then protocol_error("null blob error") end
    return error_reply(read_bytes(c, n))
  elseif t == 61 then -- = verbatim string (RESP3): "txt:" then the text
    local n = length(rest, "verbatim string", c.max_bulk)
    if n < 4 then protocol_error("bad verbatim string") end
    local s = read_bytes(c, n)
    if byte(s, 4) ~= 58 then protocol_error("bad verbatim string") end
    return sub(s, 5)
  elseif t == 62 then -- > push (RESP3)
    local n = length(rest, "push", huge)
    if n < 0 then protocol_error("null push") end
    return read_elements(c, n, depth), true
  elseif t == 124 then -- | attribute (RESP3): metadata before the reply, dropped
    read_map(c, length(rest, "attribute", huge), depth, false)
    return read_reply(c, depth)
  end
  protocol_error(t and ("unknown reply type '" .. string.char(t) .. "'") or "empty line")
end

-- Closes the client's connection after a failure (the stream is out of step).
local function broken(c)
  c.closed = true
  if c.conn then c.conn:close() end
end

-- Reads one reply that answers a command: a push that arrives meanwhile (RESP3 client
-- tracking, for example) is set aside. Returns ok, value; on failure false, message, code.
local function reply_step(c)
  while true do
    local v, push = read_reply(c, 0)
    if not push then return v end
  end
end

local function receive(c)
  local ok, v = pcall(reply_step, c)
  if ok then return true, v end
  broken(c)
  if getmetatable(v) == Failure then return false, v.message, v.code end
  error(v, 0)
end

------------------------------------------------------------------------------------------
-- Encoding commands.
------------------------------------------------------------------------------------------

-- "$<n>\r\n" for the lengths of arguments, made once each (numbers become strings through
-- snprintf, which costs more than the rest of a short argument's encoding).
local bulk_heads = setmetatable({}, {
  __index = function(t, n)
    local head = "$" .. n .. "\r\n"
    if n < KNOWN_LENGTHS_MAX then t[n] = head end
    return head
  end,
})

-- "*<argc>\r\n$<len>\r\n<NAME>\r\n", the start of a command, per name and argument count.
local command_heads, command_heads_count = {}, 0
local function command_head(name, n)
  local by_count = command_heads[name]
  if by_count == nil then
    by_count = {}
    if command_heads_count < 4096 then -- names come from code; a bound all the same
      command_heads[name] = by_count
      command_heads_count = command_heads_count + 1
    end
  end
  local head = by_count[n]
  if head == nil then
    head = "*" .. (n + 1) .. "\r\n$" .. #name .. "\r\n" .. name .. "\r\n"
    by_count[n] = head
  end
  return head
end

-- A number argument as a string; anything else is misuse.
local function argument(a, i, name)
  if type(a) == "number" then
    local int = tointeger(a)
    return int and tostring(int) or ("%.17g"):format(a)
  end
  misuse(("bad argument #%d to '%s' (string or number expected, got %s)"):format(i,
    name:lower(), type(a)))
end

-- Appends the RESP array of one command to `out` (from index k) and returns the next index.
-- Commands of one to three arguments (nearly all) are spelt out: no loop, no select calls.
local function encode(out, k, name, ...)
  local n = select("#", ...)
  out[k] = command_head(name, n)
  if n <= 3 then
    if n == 0 then return k + 1 end
    local a, b, c = ...
    if type(a) ~= "string" then a = argument(a, 1, name) end
    out[k + 1], out[k + 2] = bulk_heads[#a], a
    if n == 1 then
      out[k + 3] = "\r\n"
      return k + 4
    end
    if type(b) ~= "string" then b = argument(b, 2, name) end
    out[k + 3], out[k + 4], out[k + 5] = "\r\n" .. bulk_heads[#b], b, "\r\n"
    if n == 2 then return k + 6 end
    if type(c) ~= "string" then c = argument(c, 3, name) end
    out[k + 6], out[k + 7], out[k + 8] = bulk_heads[#c], c, "\r\n"
    return k + 9
  end
  k = k + 1
  local args = n > 6 and { ... } -- select(i, ...) in a loop is quadratic
  for i = 1, n do
    local a
    if args then a = args[i] else a = (select(i, ...)) end
    if type(a) ~= "string" then a = argument(a, i, name) end
    out[k], out[k + 1], out[k + 2] = bulk_heads[#a], a, "\r\n"
    k = k + 3
  end
  return k
end

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
  if c.closed then return nil, "closed", "ECLOSED" end
  local out = {}
  local n = encode(out, 1, cmd, ...)
  local ok, err, code = c.conn:write(concat(out, "", 1, n - 1))
  if not ok then
    broken(c)
    return nil, err, code
  end
  local v
  ok, v, code = receive(c)
  if not ok then return nil, v, code end
  if getmetatable(v) == ErrorReply then
    return nil, v.message, error_code(v.message)
  end
  return v
end

local function call(self, cmd, ...)
  local c = state_of(self, cmd:lower())
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

--- r:call(name, ...) -> the reply | nil (a nil reply) | nil, message, code.
function methods.call(self, name, ...)
  if type(name) ~= "string" then
    misuse("bad argument #1 to 'call' (string expected, got " .. type(name) .. ")")
  end
  return call(self, upper(name), ...)
end

-- Any other method name is a command: r:hset(...) is r:call("HSET", ...). The function is
-- made once per name and kept in `methods`.
setmetatable(methods, {
  __index = function(t, name)
    if type(name) ~= "string" or find(name, "^_") then return nil end
    local cmd = upper(name)
    local f = function(self, ...) return call(self, cmd, ...) end
    rawset(t, name, f)
    return f
  end,
})

------------------------------------------------------------------------------------------
-- Pipelines.
------------------------------------------------------------------------------------------

local Pipeline = {}

-- Adds one command to a pipeline.
local function queue(p, cmd, ...)
  if cmd == "SUBSCRIBE" or cmd == "PSUBSCRIBE" or cmd == "SSUBSCRIBE" or cmd == "MONITOR" then
    misuse("redis: " .. cmd .. " cannot be pipelined")
  end
  p._k = encode(p._out, p._k, cmd, ...)
  local n = p._n + 1
  p._n = n
  if tracked[cmd] then p._tracked[n] = { cmd, ... } end
  return p
end

local pipeline_methods = setmetatable({}, {
  __index = function(t, name)
    if type(name) ~= "string" or find(name, "^_") then return nil end
    local cmd = upper(name)
    local f = function(p, ...) return queue(p, cmd, ...) end
    rawset(t, name, f)
    return f
  end,
})
Pipeline.__index = pipeline_methods

function pipeline_methods.call(p, name, ...)
  if type(name) ~= "string" then
    misuse("bad argument #1 to 'call' (string expected, got " .. type(name) .. ")")
  end
  return queue(p, upper(name), ...)
end

local function read_replies(c, n)
  local results = {}
  for i = 1, n do
    local v = reply_step(c)
    if v == nil then v = null end
    results[i] = v
  end
  return results
end

--- r:pipeline(fn) -> results, n | nil, message, code. fn(p) queues commands on p (p:set(...),
-- p:call(...)); they go in one write, then every reply is read. results[i] is the i-th reply,
-- redis.null for a nil and an error object (redis.is_error) for an error reply.
function methods.pipeline(self, fn)
  local c = state_of(self, "pipeline")
  if type(fn) ~= "function" then
    misuse("bad argument #1 to 'pipeline' (function expected, got " .. type(fn) .. ")")
  end
  local p = setmetatable({ _out = {}, _k = 1, _n = 0, _tracked = {} }, Pipeline)
  fn(p)
  if p._n == 0 then return {}, 0 end
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
  for i, t in pairs(p._tracked) do
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

-- Whether a pooled connection still looks usable: nothing came in while it was idle (the
-- server closing it shows as the end of input). Waits at most one turn of the loop.
local function alive(c)
  local conn = c.conn
  conn:settimeout(0)
  local _, _, code = conn:read()
  conn:settimeout(c.timeout)
  return code == "ETIMEDOUT"
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
    and opts.pool_idle == seen.pool_idle
end

--- redis.connect(opts | url) -> client | nil, message, code.
-- opts: host (127.0.0.1), port (6379), path (a Unix socket instead), password, username, db (0),
-- timeout (seconds, 30), tls (true or srv.tcp.connect's TLS table), resp (2 or 3), max_bulk,
-- max_elements, pool_size (100), pool_idle (seconds, 30), url.
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
    prep = { o = o, key = pool_key(o), seen = seen }
    prepared[opts] = prep
  end
  local o = prep.o
  local key = prep.key
  local c = pool_take(key)
  if c then
    configure(c, o)
    return new_client(c)
  end

  local conn, err, code
  if o.path then
    conn, err, code = connect_tcp({ path = o.path, timeout = o.timeout })
  else
    conn, err, code = connect_tcp({ host = o.host, port = o.port, timeout = o.timeout, tls = o.tls })
  end
  if not conn then return nil, err, code end
  c = {
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
  return new_client(c)
end

--- r:release() -> true: the connection goes back to the pool when it is fit for reuse (open,
-- nothing unread, no transaction or WATCH, its own database, not subscribed), else it is
-- closed. The client must not be used afterwards.
function methods.release(self)
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
  local c = self._c
  if c then
    self._c = nil
    broken(c)
  end
  return true
end

function Client.__tostring(self)
  local c = self._c
  return "luasrv.redis.Client (" .. (c == nil and "released" or c.closed and "closed" or "open") .. ")"
end

Client.__close = methods.close

------------------------------------------------------------------------------------------
-- Subscriptions: the connection in subscribe mode, owned by a subscription object.
------------------------------------------------------------------------------------------

local sub_methods = {}
local Subscription = { __index = sub_methods, __name = "luasrv.redis.Subscription" }

-- Looks at one reply in subscribe mode: returns channel, message, pattern for a message,
-- or nothing for a confirmation (which it counts).
local function sub_dispatch(self, v)
  if type(v) ~= "table" then return nil end
  local kind = v[1]
  if kind == "message" or kind == "smessage" then
    return v[2], v[3]
  elseif kind == "pmessage" then
    return v[3], v[4], v[2]
  elseif kind == "subscribe" or kind == "psubscribe" or kind == "ssubscribe" then
    self.pending = self.pending - 1
    self.count = v[3]
  elseif kind == "unsubscribe" or kind == "punsubscribe" or kind == "sunsubscribe" then
    self.count = v[3]
  end
  return nil
end

-- Queues a message that arrived while a (un)subscribe waited for its confirmations.
local function sub_queue(self, channel, message, pattern)
  local q = self.queue
  q.tail = q.tail + 1
  q[q.tail] = { channel, message, pattern }
end

-- Sends a (P)SUBSCRIBE-style command; with `wait`, reads until it is confirmed.
local function sub_send(self, cmd, what, ...)
  local c = self._c
  if c == nil or c.closed then return nil, "closed", "ECLOSED" end
  local n = select("#", ...)
  if n == 0 then misuse("bad argument #1 to '" .. what .. "' (a channel name expected)") end
  local out = {}
  encode(out, 1, cmd, ...)
  local ok, err, code = c.conn:write(concat(out))
  if not ok then
    broken(c)
    return nil, err, code
  end
  self.pending = self.pending + n
  if self.reading then return self end -- the task in receive() reads the confirmations
  while self.pending > 0 do
    local v
    ok, v = pcall(read_reply, c, 0)
    if not ok then
      broken(c)
      if getmetatable(v) == Failure then return nil, v.message, v.code end
      error(v, 0)
    end
    if getmetatable(v) == ErrorReply then return nil, v.message, error_code(v.message) end
    local channel, message, pattern = sub_dispatch(self, v)
    if channel then sub_queue(self, channel, message, pattern) end
  end
  return self
end

--- sub:subscribe(channel, ...), sub:psubscribe(pattern, ...) -> sub | nil, message, code.
function sub_methods.subscribe(self, ...) return sub_send(self, "SUBSCRIBE", "subscribe", ...) end
function sub_methods.psubscribe(self, ...) return sub_send(self, "PSUBSCRIBE", "psubscribe", ...) end

--- sub:unsubscribe([channel, ...]), sub:punsubscribe([pattern, ...]) -> sub | nil, message, code.
-- Without names, from every channel (pattern). Messages already on their way still arrive.
local function unsub(self, cmd, ...)
  local c = self._c
  if c == nil or c.closed then return nil, "closed", "ECLOSED" end
  local out = {}
  encode(out, 1, cmd, ...)
  local ok, err, code = c.conn:write(concat(out))
  if not ok then
    broken(c)
    return nil, err, code
  end
  return self
end
function sub_methods.unsubscribe(self, ...) return unsub(self, "UNSUBSCRIBE", ...) end
function sub_methods.punsubscribe(self, ...) return unsub(self, "PUNSUBSCRIBE", ...) end

local function receive_step(self, c)
  local v = read_reply(c, 0)
  if getmetatable(v) == ErrorReply then return false, v.message end
  return true, sub_dispatch(self, v)
end

--- sub:receive([timeout]) -> channel, message, pattern | nil, message, code.
-- Waits up to `timeout` seconds (none: for ever) for the next message to begin; a timeout
-- is nil, "timeout", "ETIMEDOUT" and the subscription goes on. `pattern` is set for a message
-- that matched a psubscribe pattern.
function sub_methods.receive(self, timeout)
  if timeout ~= nil and type(timeout) ~= "number" then
    misuse("bad argument #1 to 'receive' (number expected, got " .. type(timeout) .. ")")
  end
  local q = self.queue
  if q.head <= q.tail then
    local m = q[q.head]
    q[q.head] = nil
    q.head = q.head + 1
    return m[1], m[2], m[3]
  end
  local c = self._c
  if c == nil or c.closed then return nil, "closed", "ECLOSED" end
  if self.reading then misuse("redis: another task is already receiving from this subscription") end
  self.reading = true
  while true do
    if c.pos > #c.buf then
      c.conn:settimeout(timeout)
      local data, err, code = c.conn:read()
      if not c.closed then c.conn:settimeout(c.timeout) end
      if not data then
        self.reading = false
        if code ~= "ETIMEDOUT" then broken(c) end
        return nil, err, code
      end
      c.buf, c.pos = data, 1
    end
    local ok, is_message, channel, message, pattern = pcall(receive_step, self, c)
    if not ok then
      self.reading = false
      broken(c)
      if getmetatable(is_message) == Failure then return nil, is_message.message, is_message.code end
      error(is_message, 0)
    end
    if not is_message then
      self.reading = false
      return nil, channel, error_code(channel)
    end
    if channel then
      self.reading = false
      return channel, message, pattern
    end
  end
end

--- sub:messages() -> an iterator of channel, message, pattern for a generic for. The loop
-- ends when the subscription is closed; another failure raises.
function sub_methods.messages(self)
  return function()
    local channel, message, pattern = self:receive()
    if channel then return channel, message, pattern end
    if message == "closed" then return nil end
    misuse("redis: subscription: " .. tostring(message))
  end
end

--- sub:close() -> true: closes the subscription's connection.
function sub_methods.close(self)
  local c = self._c
  if c then
    self._c = nil
    broken(c)
  end
  return true
end

Subscription.__close = sub_methods.close

function Subscription.__tostring(self)
  return "luasrv.redis.Subscription (" .. ((self._c and not self._c.closed) and "open" or "closed") .. ")"
end

local function subscribe(self, cmd, what, ...)
  local c = state_of(self, what)
  if c.in_multi then misuse("redis: " .. what .. " inside MULTI") end
  local subscription = setmetatable({ _c = c, pending = 0, count = 0, reading = false,
    queue = { head = 1, tail = 0 } }, Subscription)
  if select("#", ...) == 0 then misuse("bad argument #1 to '" .. what .. "' (a channel name expected)") end
  self._c = nil
  c.subscribed = true
  local ok, err, code = sub_send(subscription, cmd, what, ...)
  if not ok then return nil, err, code end
  return subscription
end

--- r:subscribe(channel, ...) / r:psubscribe(pattern, ...) -> a subscription | nil, message,
-- code. The connection now belongs to the subscription (the client is used up); the call
-- returns once the server has confirmed every channel.
function methods.subscribe(self, ...) return subscribe(self, "SUBSCRIBE", "subscribe", ...) end
function methods.psubscribe(self, ...) return subscribe(self, "PSUBSCRIBE", "psubscribe", ...) end

return M
