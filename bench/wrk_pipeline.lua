-- wrk script: HTTP/1.1 pipelining, WRK_PIPELINE (16) GET requests for the URL's path in one
-- write; wrk sends the next batch when all of their responses are in. Each response counts as
-- a request in wrk's totals. wrk records one latency per batch and its coordinated-omission
-- correction (made for one request per round trip) distorts the percentiles, so scripts/bench
-- does not report them. Ends with the
-- WRK_RESULT line of wrk_report.lua (loaded from this script's directory).
-- Run:  wrk -t1 -c50 -d10s -s bench/wrk_pipeline.lua http://127.0.0.1:8080/
-- luacheck: globals init request wrk, ignore 212
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_report.lua")

local depth = tonumber(os.getenv("WRK_PIPELINE")) or 16
local batch

function init(args)
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, nil) end
  batch = table.concat(r)
end

function request()
  return batch
end
