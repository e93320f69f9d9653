-- Runs the HTTP conformance table (tests/spec/conformance_cases.lua) against any server on
-- 127.0.0.1:PORT.
--   LUA_PATH="tests/spec/?.lua;;" luasrv bench/conformance.lua PORT             one line per
--       case with the statuses it got: what bench/conformance_nginx.sh records for nginx
--   LUA_PATH="tests/spec/?.lua;;" luasrv bench/conformance.lua PORT --markdown  the table of
--       docs/conformance.md, with the server's answers in the last column
local srv = require "luasrv"
local cases = require "conformance_cases"
local run = require "conformance_run"

local port = assert(tonumber(arg[1]), "usage: conformance.lua PORT [--markdown]")
local markdown = arg[2] == "--markdown"

local function statuses(list, closed)
  local s = #list > 0 and table.concat(list, ", ") or "none"
  if closed == true then s = s .. ", close" end
  return s
end

-- The bytes sent, shortened for a table cell: CR LF as ⏎, other controls as \ddd.
local function shown(case)
  local s = type(case.send) == "table" and table.concat(case.send) or case.send
  s = s:gsub("\r\n", "⏎"):gsub("[%c]", function(c) return ("\\%d"):format(c:byte()) end)
  s = s:gsub("(.)%1%1%1%1%1%1%1+", function(c) return c .. "…" end):gsub("|", "\\|")
  if #s > 90 then s = s:sub(1, 87) .. "…" end
  return "`" .. s .. "`" .. (type(case.send) == "table" and " (byte by byte)" or "")
end

srv.run(function()
  if markdown then
    print("| # | case | sent | RFC | wanted | nginx 1.22 | luasrv |")
    print("|---|---|---|---|---|---|---|")
  end
  for i, case in ipairs(cases) do
    local r = run(port, case)
    if markdown then
      print(("| %d | %s | %s | %s | %s | %s | %s |"):format(i, case.name, shown(case), case.rfc,
        statuses(case.want, case.close), statuses(case.nginx or {}), statuses(r.statuses, r.closed)))
    else
      print(("%2d  %-48s nginx = { %s }%s"):format(i, case.name, table.concat(r.statuses, ", "),
        r.closed and "  (closed)" or ""))
    end
  end
end)
