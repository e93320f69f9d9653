--- Runs one case of the conformance table (conformance_cases.lua) against a server on
-- 127.0.0.1:port: sends its bytes (pieces one write each), reads until the server closes or
-- stays quiet for `quiet` seconds, and returns { statuses = { ... }, closed = bool, raw = s }.
-- Must run in a task. Not a spec itself.
local srv = require "luasrv"

return function(port, case, quiet)
  local conn = assert(srv.tcp.connect("127.0.0.1", port, { timeout = 5 }))
  local pieces = type(case.send) == "table" and case.send or { case.send }
  for _, p in ipairs(pieces) do
    if not conn:write(p) then break end
  end
  conn:settimeout(quiet or 0.3)
  local raw, closed = {}, false
  local deadline = srv.monotime() + 5
  while srv.monotime() < deadline do
    local data, err = conn:read()
    if data then
      raw[#raw + 1] = data
    else
      closed = err == "closed"
      break
    end
  end
  conn:close()
  local text = table.concat(raw)
  local statuses = {}
  for code in ("\n" .. text):gmatch("\nHTTP/1%.%d (%d%d%d) ") do statuses[#statuses + 1] = tonumber(code) end
  return { statuses = statuses, closed = closed, raw = text }
end
