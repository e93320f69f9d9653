--- luasrv.redis.resp: the Redis protocol (RESP2 and RESP3) for luasrv.redis: the reply
-- parser over a connection's input and the command encoder, and the failures they raise.
-- Internal to luasrv.redis.
local core = require "luasrv.core"

local type, tostring, tonumber, select, error, pcall = type, tostring, tonumber, select, error, pcall
local setmetatable, getmetatable, rawset = setmetatable, getmetatable, rawset
local find, sub, byte, match = string.find, string.sub, string.byte, string.match
local tointeger, huge = math.tointeger, math.huge

local M = {}

--- A nil inside an array reply (and a RESP3 null there): the JSON null light userdata.
local null = core.json.null
M.null = null

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

-- Whether a chunk's source (as debug.getinfo reports it) is a file of luasrv.redis.
local function ours(source)
  return find(source, "luasrv/redis[%.%/]") ~= nil
end

--- Raises `message` at the first caller outside luasrv.redis (the user's file:line), however
-- deep inside the module the misuse was found.
local function misuse(message)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if info == nil or not ours(info.source) then break end
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

local function check_count(c, n)
  if n > c.max_elements then
    protocol_error("aggregate of " .. n .. " elements is over the limit of " .. c.max_elements)
  end
end

local function read_elements(c, n, depth)
  check_count(c, n)
  local t = {}
  for i = 1, n do
    local v = read_reply(c, depth + 1)
    if v == nil then v = null end
    t[i] = v
  end
  return t
end

local function read_map(c, n, depth, as_set)
  check_count(c, n)
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
-- The commonest replies, a bulk string of a length seen before and an integer, are taken
-- here when they are whole in the buffer; anything else (and anything odd) goes the long way.
local function reply_step(c)
  local buf, pos = c.buf, c.pos
  local t = byte(buf, pos)
  if t == 36 then -- $
    local e = find(buf, "\r\n", pos + 1, true)
    local n = e and known_lengths[sub(buf, pos + 1, e - 1)]
    if n and n <= c.max_bulk then
      if n < 0 then
        c.pos = e + 2
        return nil
      end
      local stop = e + 1 + n
      local cr, lf = byte(buf, stop + 1, stop + 2)
      if cr == 13 and lf == 10 then
        c.pos = stop + 3
        return sub(buf, e + 2, stop)
      end
    end
  elseif t == 58 then -- :
    local _, e, digits = find(buf, "^(%-?%d+)\r\n", pos + 1)
    local v = e and tointeger(tonumber(digits))
    if v then
      c.pos = e + 1
      return v
    end
  end
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

-- A table of before .. n .. "\r\n" by length n, each made once (numbers become strings
-- through snprintf, which costs more than the rest of a short argument's encoding).
local function length_prefixes(before)
  return setmetatable({}, {
    __index = function(t, n)
      local head = before .. n .. "\r\n"
      if n < KNOWN_LENGTHS_MAX then t[n] = head end
      return head
    end,
  })
end
local bulk_heads = length_prefixes("$")     -- "$<n>\r\n": an argument's length
local next_heads = length_prefixes("\r\n$") -- the end of one argument, the length of the next

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

-- The RESP array of one command, as one string. Commands of one to three arguments (nearly
-- all) are spelt out as one concatenation: no table, no loop, no select calls (several times
-- cheaper than pieces joined by table.concat). Longer ones go through a table kept for the
-- purpose (emptied after, so it holds no argument alive): nothing can run between the
-- encoding and the concat.
local scratch = {}
local concat = table.concat
local function wire(name, ...)
  local n = select("#", ...)
  local by_count = command_heads[name]
  local head = by_count and by_count[n] or command_head(name, n)
  if n <= 3 then
    if n == 0 then return head end
    local a, b, c = ...
    if type(a) ~= "string" then a = argument(a, 1, name) end
    if n == 1 then return head .. bulk_heads[#a] .. a .. "\r\n" end
    if type(b) ~= "string" then b = argument(b, 2, name) end
    if n == 2 then return head .. bulk_heads[#a] .. a .. next_heads[#b] .. b .. "\r\n" end
    if type(c) ~= "string" then c = argument(c, 3, name) end
    return head .. bulk_heads[#a] .. a .. next_heads[#b] .. b .. next_heads[#c] .. c .. "\r\n"
  end
  scratch[1] = head
  local k = 2
  local args = n > 6 and { ... } -- select(i, ...) in a loop is quadratic
  for i = 1, n do
    local a
    if args then a = args[i] else a = (select(i, ...)) end
    if type(a) ~= "string" then a = argument(a, i, name) end
    scratch[k], scratch[k + 1], scratch[k + 2] = bulk_heads[#a], a, "\r\n"
    k = k + 3
  end
  local wire_text = concat(scratch, "", 1, k - 1)
  for i = 1, k - 1 do scratch[i] = nil end
  return wire_text
end

-- Appends one command to `out` at index k (for one write of many) and returns the next index.
local function encode(out, k, name, ...)
  out[k] = wire(name, ...)
  return k + 1
end

-- The replies of a pipeline of n commands: nils as null, error replies as ErrorReply objects.
local function read_replies(c, n)
  local results = {}
  for i = 1, n do
    local v = reply_step(c)
    if v == nil then v = null end
    results[i] = v
  end
  return results
end

-- Whether an unused connection still looks usable: nothing came in while it was idle (the
-- server closing it shows as the end of input). Waits at most one turn of the loop.
local function alive(c)
  local conn = c.conn
  conn:settimeout(0)
  local _, _, code = conn:read()
  conn:settimeout(c.timeout)
  return code == "ETIMEDOUT"
end

-- Closes the connection an object (client, subscription) owns, once: obj._c is the state.
local function close_owned(obj)
  local c = obj._c
  if c then
    obj._c = nil
    broken(c)
  end
  return true
end

-- Writes one command on the connection of state c: true, or nil, message, code (and the
-- connection is closed).
local function send(c, cmd, ...)
  if c.closed then return nil, "closed", "ECLOSED" end
  local ok, err, code = c.conn:write(wire(cmd, ...))
  if not ok then
    broken(c)
    return nil, err, code
  end
  return true
end

-- Makes the table `t` answer any other name with a method for the command of that name:
-- t.hset is function(obj, ...) return dispatch(obj, "HSET", ...) end, made once and kept;
-- t.call(obj, name, ...) sends a command by name.
local function command_methods(t, dispatch)
  function t.call(obj, name, ...)
    if type(name) ~= "string" then
      misuse("bad argument #1 to 'call' (string expected, got " .. type(name) .. ")")
    end
    return dispatch(obj, string.upper(name), ...)
  end
  return setmetatable(t, {
    __index = function(tt, name)
      if type(name) ~= "string" or find(name, "^_") then return nil end
      local cmd = string.upper(name)
      local f = function(obj, ...) return dispatch(obj, cmd, ...) end
      rawset(tt, name, f)
      return f
    end,
  })
end

M.Failure, M.ErrorReply = Failure, ErrorReply
M.wire, M.send, M.close_owned, M.command_methods = wire, send, close_owned, command_methods
M.alive = alive
M.misuse, M.error_code, M.broken = misuse, error_code, broken
M.read_reply, M.reply_step, M.receive, M.read_replies = read_reply, reply_step, receive, read_replies
M.encode = encode

return M
