--- luasrv.redis.mux: the connection that clients made with `multiplex = true` share, one per
-- server, database and user, per worker. Commands that tasks send during one turn of the loop
-- go out in one write; a reader task parses the replies in order and wakes each task that
-- asked (core.waiter). Many requests each waiting on Redis then cost one write and one read
-- between them instead of one each. Internal to luasrv.redis.
local core = require "luasrv.core"
local resp = require "luasrv.redis.resp"

local pcall, error, tostring, getmetatable, setmetatable = pcall, error, tostring, getmetatable,
  setmetatable
local concat, running = table.concat, coroutine.running
local reply_step, read_replies, broken = resp.reply_step, resp.read_replies, resp.broken
local Failure = resp.Failure
local new_waiter, sleep, after = core.waiter, core.sleep, core.after

local M = {}

local muxes = {}                                  -- the live connection per key
-- A request record per task's coroutine, reused (a task has one request at a time: it waits
-- for it), with the task's waiter.
local records = setmetatable({}, { __mode = "k" })

local function record_of_running_task()
  local co = running()
  local req = records[co]
  if req == nil then
    req = { w = new_waiter() }
    records[co] = req
  end
  return req
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
  m.reader_w:wake() -- the reader task sees `dead` and ends
end

local function read_for(c, req)
  if req.n == 1 then return reply_step(c) end
  return read_replies(c, req.n)
end

-- The reader task: while requests wait, reads their replies in order and hands each over;
-- otherwise waits to be told that more were sent (so an idle connection keeps nothing
-- waiting on the loop).
local function reader(m)
  local q, c = m.pending, m.c
  while not m.dead do
    if q.head > q.tail then
      m.reader_idle = true
      local woken = m.reader_w:wait(m.idle)
      m.reader_idle = false
      if not woken and q.head > q.tail then
        -- Unused for `idle` seconds: close, so that nothing stays waiting (a reload can then
        -- free the generation); the next request connects again.
        fail_all(m, "closed", "ECLOSED")
        return
      end
    else
      local req = q[q.head]
      local ok, v = pcall(read_for, c, req)
      if not ok then
        if getmetatable(v) == Failure then
          fail_all(m, v.message, v.code)
        else
          fail_all(m, "redis: " .. tostring(v), "EPROTO")
        end
        return
      end
      q[q.head] = nil
      q.head = q.head + 1
      req.value, req.done = v, true
      req.w:wake()
    end
  end
end

-- Sends what was queued (more may come while a long write waits: sent next, in order).
local function flush(m)
  while m.k > 1 and not m.dead do
    local out, k = m.out, m.k
    m.out, m.k = {}, 1
    local ok, err, code = m.c.conn:write(concat(out, "", 1, k - 1))
    if not ok then
      fail_all(m, err, code)
      break
    end
    if m.reader_idle then m.reader_w:wake() end
  end
  m.flushing = false
end

-- Connects (first use), or gives the loop one turn so that the commands other tasks send
-- meanwhile join this write.
local function prepare_write(m)
  if m.c then
    sleep(0)
    return true
  end
  local c, err, code = m.dial()
  if not c then return nil, err, code end
  m.c = c
  after(0, function() reader(m) end)
  return true
end

--- mux.request(key, dial, idle, n, wire) -> the reply (n == 1) or the table of n replies |
-- nil, message, code. `wire` holds n encoded commands; dial() makes the connection state; a
-- connection unused for `idle` seconds is closed (and made again when needed).
function M.request(key, dial, idle, n, wire)
  local m = muxes[key]
  if m == nil then
    m = { key = key, dial = dial, idle = idle, out = {}, k = 1, pending = { head = 1, tail = 0 },
          reader_w = new_waiter(), flushing = false, reader_idle = false, dead = false }
    muxes[key] = m
  end
  local req = record_of_running_task()
  local w = req.w
  req.n, req.done, req.value, req.err, req.code = n, false, nil, nil, nil
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
  if flusher then flush(m) end
  while not req.done and req.err == nil do w:wait() end
  local value = req.value
  req.value = nil -- the record outlives the request: it holds no reply
  if req.err ~= nil then return nil, req.err, req.code end
  return value
end

return M
