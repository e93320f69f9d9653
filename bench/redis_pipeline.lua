-- Pipelined SET and GET of 64-byte values from one luasrv task on one connection, batches of
-- 16 commands (what `redis-benchmark -P 16 -c 1 -t set,get -d 64` does), for scripts/bench.
-- Run:  luasrv bench/redis_pipeline.lua PORT SECONDS [BATCH]
-- Prints: set_ops_per_s=N get_ops_per_s=N ops=N
local srv = require "luasrv"
local redis = require "luasrv.redis"

local port, seconds, batch = tonumber(arg[1]), tonumber(arg[2]) or 2, tonumber(arg[3]) or 16
assert(port, "usage: redis_pipeline.lua PORT SECONDS [BATCH]")

local value = ("x"):rep(64)
local keys = {}
for i = 1, batch do keys[i] = "key:" .. i end
local r = assert(redis.connect({ port = port, timeout = 10 }))

-- Runs batches of `batch` commands for `secs` seconds; returns operations per second.
local function phase(secs, queue)
  local ops, t0 = 0, srv.monotime()
  local deadline = t0 + secs
  local fill = function(p)
    for i = 1, batch do queue(p, i) end
  end
  repeat
    local results, n = r:pipeline(fill)
    assert(results, n)
    ops = ops + n
  until srv.monotime() >= deadline
  return ops / (srv.monotime() - t0), ops
end

local set_rate, set_ops = phase(seconds / 2, function(p, i) p:set(keys[i], value) end)
local get_rate, get_ops = phase(seconds / 2, function(p, i) p:get(keys[i]) end)
assert(r:get(keys[1]) == value)
print(("set_ops_per_s=%.0f get_ops_per_s=%.0f ops=%d"):format(set_rate, get_rate, set_ops + get_ops))
r:close()
