-- Checks of the timestamp examples' replies, shared by their TCP and UDP specs. (Plain errors:
-- busted's assert is not available in a module they require.)
local S = {}

--- Every os.date("%c") a stamp made between `from` and `to` (epoch seconds) could read.
function S.stamps_between(from, to)
  local set = {}
  for t = math.floor(from) - 1, math.ceil(to) + 1 do set[os.date("%c", t)] = true end
  return set
end

--- Raises unless `reply` is "[<a date from the set>] <message>".
function S.assert_stamped(reply, message, dates)
  if type(reply) ~= "string" then
    error(("expected a string reply, got %s"):format(type(reply)), 2)
  end
  local date, rest = reply:match("^%[(.-)%] (.*)$")
  if not date then error("not a stamped reply: " .. reply, 2) end
  if rest ~= message then
    error(("expected the message %q, got %q"):format(message, rest), 2)
  end
  if not dates[date] then
    error(("the stamp %q is not the time of the request"):format(date), 2)
  end
end

return S
