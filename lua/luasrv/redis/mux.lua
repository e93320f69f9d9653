--- luasrv.redis.mux: the connection that clients made with `multiplex = true` share, one per
-- server, database and user, per worker. Commands that tasks send during one turn of the loop
-- go out in one write. There is no reader task: among the tasks waiting for replies, one reads
-- (in order, handing each reply to its task and waking it with core.waiter) until its own reply
-- is there, then passes the reading on to the next task still waiting. So nothing waits on the
-- loop when no command is out, and a graceful stop or a reload is not held up. Internal to
-- luasrv.redis.
local core = require "luasrv.core"
local resp = require "luasrv.redis.resp"

local pcall, error, tostring, getmetatable = pcall, error, tostring, getmetatable
local concat = table.concat
local reply_step, read_replies, broken, alive = resp.reply_step, resp.read_replies, resp.broken,
  resp.alive
local Failure = resp.Failure
local new_waiter, sleep, monotime = core.waiter, core.sleep, core.monotime

local M = {}

local PROBE_AFTER = 1 -- seconds unused before the connection is checked before a write

local muxes = {}                                  -- the live connection per key

-- Waiters of requests that ended, for the next ones (a request takes one for its reply). A
-- wake-up left over from an earlier request only makes the next one look at its state again.
local idle_waiters, idle_count = {}, 0

local function take_waiter()
  if idle_count == 0 then return new_waiter() end
  local w = idle_waiters[idle_count]
  idle_waiters[idle_count] = nil
  idle_count = idle_count - 1
  return w
end

local function give_waiter(w)
  idle_count = idle_count + 1
  idle_waiters[idle_count] = w
end

-- Ends the connection: every request still waiting gets the failure.
local function fail_all(m, message, code)
  if m.dead then return end
  m.dead = true
  if muxes[m.key] == m then muxes[m.key] = nil end
  if m.c then broken(m.c) end
  local q = m.pending
  for i = q.head, q.tail do
    local req = q[i]
    q[i] = nil
    req.err, req.code = message, code
    req.w:wake()
  end
  q.head, q.tail = 1, 0
end

-- Reads replies in order until `mine` has its own, waking the task of each other one. What
-- the reader raises (a broken or malformed stream) goes to read_until's one pcall.
local function read_replies_until(m, mine)
  local q, c = m.pending, m.c
  while not mine.done and mine.err == nil do
    local head = q.head
    local req = q[head]
    local n = req.n
    local v
    if n == nil then v = reply_step(c) else v = read_replies(c, n) end
    q[head] = nil
    if head == q.tail then
      -- Every command sent was answered: the FIFO starts again at 1, so that its slots are
      -- reused (keys that only grow would keep the table rehashing).
      q.head, q.tail, m.sent = 1, 0, 0
    else
      q.head = head + 1
    end
    req.value, req.done = v, true
    if req ~= mine then req.w:wake() end
  end
end

local function read_until(m, mine)
  local ok, v = pcall(read_replies_until, m, mine)
  if not ok then
    if getmetatable(v) == Failure then
      fail_all(m, v.message, v.code)
    else
      fail_all(m, "redis: " .. tostring(v), "EPROTO")
    end
  end
end

-- Before a write: connects (first use, or an idle connection the server closed meanwhile),
-- or gives the loop one turn so that the commands other tasks send meanwhile join this write.
local function prepare_write(m)
  local c = m.c
  if c ~= nil then
    local q = m.pending
    if q.head <= q.tail or monotime() - m.last_write < PROBE_AFTER then
      sleep(0)
      return true
    end
    if alive(c) then return true end -- (its turn of the loop lets other commands join too)
    broken(c) -- nothing of it is pending: a new connection loses nothing
    m.c = nil
  end
  local err, code
  c, err, code = m.dial()
  if not c then return nil, err, code end
  m.c = c
  return true
end

-- Sends what was queued (more may come while a long write waits: sent next, in order). The
-- requests up to m.sent (their index in the FIFO) are then on the wire: their tasks may read.
local function flush(m)
  local q = m.pending
  while m.k > 1 and not m.dead do
    local out, k, upto = m.out, m.k, q.tail
    m.out, m.k = {}, 1
    local ok, err, code = m.c.conn:write(concat(out, "", 1, k - 1))
    if not ok then
      fail_all(m, err, code)
      break
    end
    m.sent = upto
    -- Nobody reads yet: the task at the head of the FIFO starts.
    if not m.reading and q.head <= q.tail then q[q.head].w:wake() end
  end
  m.last_write = monotime()
  m.flushing = false
end

--- mux.request(key, dial, n, wire) -> the reply (n == nil: one command) or the table of the
-- n replies (a pipeline, n >= 1) | nil, message, code. `wire` holds the encoded commands;
-- dial() makes the connection state.
function M.request(key, dial, n, wire)
  local m = muxes[key]
  if m == nil then
    m = { key = key, dial = dial, out = {}, k = 1, pending = { head = 1, tail = 0 }, sent = 0,
          flushing = false, reading = false, dead = false, last_write = 0 }
    muxes[key] = m
  end
  local w = take_waiter()
  local req = { n = n, w = w, done = false }
  local flusher = not m.flushing
  if flusher then
    -- This task sends the batch. It waits first; misuse outside a task raises here, before
    -- anything but the flag changed.
    m.flushing = true
    local ok, ready, err, code = pcall(prepare_write, m)
    if not ok then
      m.flushing = false
      error(ready, 0)
    end
    if not ready then
      fail_all(m, err, code)
      return nil, err, code
    end
  end
  if m.dead then return nil, "closed", "ECLOSED" end
  m.out[m.k] = wire
  m.k = m.k + 1
  local q = m.pending
  q.tail = q.tail + 1
  q[q.tail] = req
  local index = q.tail
  if flusher then flush(m) end
  while not req.done and req.err == nil do
    if m.reading or m.dead or index > m.sent then
      w:wait() -- for the reply, a failure, the write, or the reading handed over
    else
      m.reading = true
      read_until(m, req)
      m.reading = false
      -- The next task still waiting reads from here on.
      if not m.dead and q.head <= q.tail then q[q.head].w:wake() end
    end
  end
  give_waiter(w)
  if req.err ~= nil then return nil, req.err, req.code end
  return req.value
end

return M
