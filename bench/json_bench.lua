-- JSON encode/decode speed: srv.json against lua-cjson (what luasrv used before srv.json) on
-- three documents an HTTP API handles: a small object (~200 B), an array of 150 objects
-- (~20 KB) and a string-heavy document (~24 KB of text with escapes and UTF-8).
--   build/luasrv bench/json_bench.lua [seconds per measurement, default 0.2] [rounds, default 5]
-- Prints microseconds per call (best of the rounds, CPU time) and MB/s of JSON text. lua-cjson
-- is optional (apt-get install lua-cjson); without it only srv.json is measured.
local json = require("luasrv").json
local has_cjson, cjson = pcall(require, "cjson")

local seconds = tonumber(arg and arg[1]) or 0.2
local rounds = tonumber(arg and arg[2]) or 5

local function small_doc()
  return {
    id = 12345, name = "Ada Lovelace", email = "ada@example.com", active = true, score = 98.5,
    roles = { "admin", "editor" }, created_at = "2024-01-01T12:00:00Z",
    address = { city = "London", zip = "N1 9GU", country = "GB" }, manager = json.null,
  }
end

local function list_doc()
  local items = {}
  for i = 1, 150 do
    items[i] = {
      id = i, sku = ("SKU-%06d"):format(i * 7919), title = "Widget number " .. i,
      price = i * 1.25 + 0.99, stock = (i * 37) % 500, available = i % 3 ~= 0,
      tags = { "tools", i % 2 == 0 and "sale" or "new" },
    }
  end
  return { items = items, total = 150, page = 1 }
end

local function text_doc()
  local paragraph = "The caf\xc3\xa9 on the corner sold \"strong\" coffee for 3 \xe2\x82\xac; "
    .. "its owner said:\n\tpath/to/the/shop \\ open 7 days.\n"
  local articles = {}
  for i = 1, 12 do
    articles[i] = {
      id = i, title = "Article " .. i .. ": na\xc3\xafve r\xc3\xa9sum\xc3\xa9s",
      body = paragraph:rep(20), author = "J. Doe",
    }
  end
  return { articles = articles }
end

local function time_per_call(fn, arg_value)
  -- calibrate: enough calls for `seconds` of CPU time
  local n, start = 1, os.clock()
  while true do
    for _ = 1, n do fn(arg_value) end
    local elapsed = os.clock() - start
    if elapsed >= seconds / 4 then
      n = math.max(1, math.floor(n * seconds / elapsed))
      break
    end
    n, start = n * 2, os.clock()
  end
  local best = math.huge
  for _ = 1, rounds do
    start = os.clock()
    for _ = 1, n do fn(arg_value) end
    best = math.min(best, (os.clock() - start) / n)
  end
  return best
end

local impls = { { name = "srv.json", encode = json.encode, decode = json.decode } }
if has_cjson then
  impls[#impls + 1] = { name = "lua-cjson", encode = cjson.encode, decode = cjson.decode }
end

print(("%-8s %7s %-7s %12s %9s %12s %9s %7s"):format("document", "bytes", "op", "srv.json us",
  "MB/s", "cjson us", "MB/s", "ratio"))
for _, doc in ipairs({ { "small", small_doc() }, { "list", list_doc() }, { "text", text_doc() } }) do
  local name, value = doc[1], doc[2]
  local text = json.encode(value)
  for _, op in ipairs({ "encode", "decode" }) do
    local times = {}
    for i, impl in ipairs(impls) do
      local input = op == "encode" and value or text
      if impl.name == "lua-cjson" and op == "encode" then
        input = cjson.decode(text) -- cjson's own null; otherwise the same value
      end
      times[i] = time_per_call(impl[op], input)
    end
    local mb = function(t) return #text / t / 1e6 end
    if times[2] then
      print(("%-8s %7d %-7s %12.2f %9.1f %12.2f %9.1f %7.2f"):format(name, #text, op,
        times[1] * 1e6, mb(times[1]), times[2] * 1e6, mb(times[2]), times[1] / times[2]))
    else
      print(("%-8s %7d %-7s %12.2f %9.1f"):format(name, #text, op, times[1] * 1e6, mb(times[1])))
    end
  end
end
if has_cjson then
  print("ratio: srv.json time / lua-cjson time (below 1: srv.json is faster)")
end
