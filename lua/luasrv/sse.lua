--- Server-Sent Events (the WHATWG HTML "event stream"): res:sse() turns a response into a
-- stream of events that the browser's EventSource reads.
--
--   app:get("/events", function(req, res)
--     local ev = res:sse()
--     ev:send{ event = "tick", data = "1", id = "1" }
--   end)
local type, error, tostring, setmetatable = type, error, tostring, setmetatable
local find, gsub, concat, floor = string.find, string.gsub, table.concat, math.floor

local Stream = {}
Stream.__index = Stream

local M = {}

-- A field value must stay on its line: no CR or LF (and, for an id, no NUL, which makes the
-- browser ignore the field).
local function check_line(value, name, level)
  if find(value, "[\r\n]") or (name == "id" and find(value, "\0", 1, true)) then
    error(("sse: %s must not contain %s"):format(name, name == "id" and "CR, LF or NUL" or "CR or LF"),
      level + 1)
  end
end

--- res:sse() -> stream. Sends the head: 200, Content-Type: text/event-stream, no caching,
-- no proxy buffering. The stream ends when the handler returns.
function M.open(res)
  res:header("Content-Type", "text/event-stream; charset=utf-8")
  res:header("Cache-Control", "no-cache")
  res:header("X-Accel-Buffering", "no") -- nginx: pass each event on at once
  local ok, err, code = res:write()
  if not ok then return nil, err, code end
  return setmetatable({ res = res }, Stream)
end

--- ev:send(event) -> ev | nil, message, code. event is a string (the data) or a table:
-- data (string; each line becomes a "data:" line), event (the type), id (the client sends it
-- back as Last-Event-ID when it reconnects), retry (milliseconds before a reconnect).
function Stream:send(ev)
  local out, n = {}, 0
  if type(ev) ~= "table" then
    if type(ev) ~= "string" and type(ev) ~= "number" then
      error("bad argument #1 to 'send' (string or table expected, got " .. type(ev) .. ")", 2)
    end
    ev = { data = tostring(ev) }
  end
  if ev.event ~= nil then
    local name = tostring(ev.event)
    check_line(name, "event", 2)
    n = n + 1; out[n] = "event: " .. name .. "\n"
  end
  if ev.id ~= nil then
    local id = tostring(ev.id)
    check_line(id, "id", 2)
    n = n + 1; out[n] = "id: " .. id .. "\n"
  end
  if ev.retry ~= nil then
    if type(ev.retry) ~= "number" or ev.retry < 0 or floor(ev.retry) ~= ev.retry then
      error("sse: retry must be a whole number of milliseconds", 2)
    end
    n = n + 1; out[n] = ("retry: %d\n"):format(ev.retry)
  end
  if ev.data ~= nil then
    local data = gsub(gsub(tostring(ev.data), "\r\n", "\n"), "\r", "\n")
    n = n + 1; out[n] = "data: " .. gsub(data, "\n", "\ndata: ") .. "\n"
  end
  if n == 0 then error("sse: an event needs data, event, id or retry", 2) end
  n = n + 1; out[n] = "\n"
  local ok, err, code = self.res:write(concat(out))
  if not ok then return nil, err, code end
  return self
end

--- ev:comment([text]) -> ev | nil, message, code: a comment line, which clients ignore;
-- sent now and then it keeps proxies from closing an idle stream and shows whether the client
-- is still there (a closed one makes it fail).
function Stream:comment(text)
  text = text and tostring(text) or ""
  check_line(text, "comment", 2)
  local ok, err, code = self.res:write(": " .. text .. "\n\n")
  if not ok then return nil, err, code end
  return self
end

return M
