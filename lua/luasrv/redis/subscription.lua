--- luasrv.redis.subscription: a connection in subscribe mode, owned by a subscription
-- object (r:subscribe, r:psubscribe). Internal to luasrv.redis.
local resp = require "luasrv.redis.resp"

local type, tostring, select, error, pcall = type, tostring, select, error, pcall
local setmetatable, getmetatable = setmetatable, getmetatable
local read_reply, broken, misuse = resp.read_reply, resp.broken, resp.misuse
local Failure, ErrorReply, error_code = resp.Failure, resp.ErrorReply, resp.error_code

local M = {}

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

-- Sends one command on the subscription's connection: its state, or nil, message, code.
local function send(self, cmd, ...)
  local c = self._c
  if c == nil then return nil, "closed", "ECLOSED" end
  local ok, err, code = resp.send(c, cmd, ...)
  if not ok then return nil, err, code end
  return c
end

-- Sends a (P)SUBSCRIBE-style command and, unless another task is receiving, reads until the
-- server confirmed it.
local function sub_send(self, cmd, what, ...)
  local n = select("#", ...)
  if n == 0 then misuse("bad argument #1 to '" .. what .. "' (a channel name expected)") end
  local c, err, code = send(self, cmd, ...)
  if not c then return nil, err, code end
  local ok
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
  local c, err, code = send(self, cmd, ...)
  if not c then return nil, err, code end
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
  return resp.close_owned(self)
end

Subscription.__close = sub_methods.close

function Subscription.__tostring(self)
  return "luasrv.redis.Subscription (" .. ((self._c and not self._c.closed) and "open" or "closed") .. ")"
end

--- subscription.new(c, cmd, what, ...) -> a subscription owning the connection state c, once
-- the server confirmed every channel of `cmd` (SUBSCRIBE or PSUBSCRIBE) | nil, message, code.
function M.new(c, cmd, what, ...)
  local subscription = setmetatable({ _c = c, pending = 0, count = 0, reading = false,
    queue = { head = 1, tail = 0 } }, Subscription)
  c.subscribed = true
  local ok, err, code = sub_send(subscription, cmd, what, ...)
  if not ok then return nil, err, code end
  return subscription
end

return M
