--- For the specs of the outbound HTTP client and the proxy (http_client_spec.lua,
-- http_proxy_spec.lua): scripted upstream servers that read requests byte for byte and write
-- exact answers, and the pool's counters since the start of a run.
local srv = require "luasrv"

local M = {}

--- Reads one request from a raw connection: req.line, method, target, version; the fields as
-- sent (req.fields: { name, value } in order), req.headers (lower-case names, the last of a
-- name) and req.order (the lower-case names in order); the body (Content-Length, or chunked:
-- req.chunked; not read when the request expects a 100 Continue). nil at the end of input.
function M.read_request(conn)
  local line = conn:readline()
  if not line then return nil end
  local req = { line = line, fields = {}, headers = {}, order = {}, body = "" }
  req.method, req.target, req.version = line:match("^(%S+) (%S+) HTTP/(%d%.%d)$")
  assert(req.method, "bad request line: " .. line)
  while true do
    local h = conn:readline()
    if not h then return nil end
    if h == "" then break end
    local name, value = h:match("^([^:]+):[ \t]*(.-)[ \t]*$")
    local lower = name:lower()
    req.fields[#req.fields + 1] = { name, value }
    req.headers[lower] = value
    req.order[#req.order + 1] = lower
  end
  local cl = tonumber(req.headers["content-length"])
  if req.headers["transfer-encoding"] then
    req.chunked = true
    local parts = {}
    while true do
      local size = tonumber(assert(conn:readline()), 16)
      if size == 0 then assert(conn:readline()) break end
      parts[#parts + 1] = assert(conn:read(size))
      assert(conn:readline())
    end
    req.body = table.concat(parts)
  elseif cl and cl > 0 and not req.headers.expect then
    req.body = assert(conn:read(cl))
  end
  return req
end

--- A scripted upstream on a free port: `answer(req, conn, n)` runs for each request (n: its
-- number on its connection) and writes what it likes; the connection closes when it returns
-- false. The record has url, port, listener, and counts connections and requests (rec.seen:
-- every request, rec.last: the last one). Each read may wait `timeout` seconds (default 5).
function M.raw_server(answer, timeout)
  local rec = { conns = 0, requests = 0, seen = {} }
  rec.listener = srv.tcp.listen({ port = 0 }, function(conn)
    rec.conns = rec.conns + 1
    conn:settimeout(timeout or 5)
    local n = 0
    while true do
      local req = M.read_request(conn)
      if not req then return end
      n = n + 1
      rec.requests = rec.requests + 1
      rec.seen[#rec.seen + 1] = req
      rec.last = req
      if answer(req, conn, n) == false then return end
    end
  end)
  local _, port = rec.listener:address()
  rec.url, rec.port = "http://127.0.0.1:" .. port, port
  return rec
end

local baseline

--- pool_stats() with its counters since the start of the current run().
function M.stats()
  local now = srv.http.pool_stats()
  for _, k in ipairs({ "created", "reused", "retried", "closed_idle" }) do
    now[k] = now[k] - baseline[k]
  end
  return now
end

--- srv.run(fn) with the pool emptied before and after, and `cleanup` (if any) called after
-- fn whether it failed or not; fn's failure is raised then.
function M.run(fn, cleanup)
  return srv.run(function()
    srv.http.pool_close()
    baseline = srv.http.pool_stats()
    local ok, err = xpcall(fn, debug.traceback)
    if cleanup then cleanup() end
    srv.http.pool_close()
    assert(ok, err)
  end)
end

return M
