--- Set-Cookie header values (RFC 6265), behind res:cookie(name, value [, opts]).
-- Everything is checked before it is sent: a name that is not a token, a value with
-- characters a cookie cannot hold, an attribute that would break the header, a SameSite=None
-- or a __Secure-/__Host- cookie without Secure. Each raises a Lua error naming the problem.
local type, tostring, error, pairs, floor = type, tostring, error, pairs, math.floor
local find, lower, format, date, concat = string.find, string.lower, string.format, os.date,
  table.concat

local M = {}

local OPTIONS = {
  path = true, domain = true, max_age = true, expires = true, http_only = true, secure = true,
  same_site = true, partitioned = true,
}
local SAME_SITE = { strict = "Strict", lax = "Lax", none = "None" }

-- Browsers keep at most this much of name and value together.
local MAX_SIZE = 4096

local function fail(msg, level)
  error("cookie: " .. msg, level + 1)
end

--- 1 if s is an RFC 9110 token (a valid cookie name).
local function is_token(s)
  return s ~= "" and not find(s, "[^!#$%%&'*+%-.^_`|~%w]")
end
M.is_token = is_token

--- Whether v is a valid cookie value: cookie-octets, optionally in double quotes.
local function valid_value(v)
  if #v >= 2 and v:sub(1, 1) == '"' and v:sub(-1) == '"' then v = v:sub(2, -2) end
  return not find(v, '[%c ",;\\\128-\255]')
end
M.valid_value = valid_value

--- An HTTP date (IMF-fixdate) for a time in seconds since the epoch.
function M.http_date(t)
  return date("!%a, %d %b %Y %H:%M:%S GMT", floor(t))
end

local function attribute_text(name, v, level)
  if type(v) ~= "string" then
    fail(("'%s' must be a string, not %s"):format(name, type(v)), level + 1)
  end
  -- av-octet: any CHAR but controls and ";"
  if find(v, "[%c;\128-\255]") then
    fail(("'%s' contains a control character, ';' or a non-ASCII byte"):format(name), level + 1)
  end
  return v
end

--- The Set-Cookie value for name, value and options (see res:cookie). A nil value makes a
-- cookie that deletes the one of that name (empty, Max-Age=0, Expires in 1970). `level` is
-- the stack level errors are reported at (default: the caller).
function M.format(name, value, opts, level)
  level = (level or 1) + 1
  if type(name) ~= "string" or not is_token(name) then
    fail(("invalid name %q (a token expected: letters, digits and !#$%%&'*+-.^_`|~)")
      :format(tostring(name)), level)
  end
  opts = opts or {}
  if type(opts) ~= "table" then fail("options must be a table", level) end
  for k in pairs(opts) do
    if not OPTIONS[k] then fail(("unknown option '%s'"):format(tostring(k)), level) end
  end
  local delete = value == nil
  if delete then
    value = ""
  elseif type(value) == "number" then
    value = tostring(value)
  elseif type(value) ~= "string" then
    fail(("value must be a string, not %s"):format(type(value)), level)
  end
  if not valid_value(value) then
    fail(("invalid value for '%s': no controls, spaces, '\"', ',', ';', '\\' or non-ASCII "
      .. "bytes (encode it first, e.g. as base64 or with percent-escapes)"):format(name), level)
  end
  if #name + #value > MAX_SIZE then
    fail(("'%s' is larger than %d bytes"):format(name, MAX_SIZE), level)
  end
  local parts = { name .. "=" .. value }
  local path, domain = opts.path, opts.domain
  if path ~= nil then parts[#parts + 1] = "Path=" .. attribute_text("path", path, level) end
  if domain ~= nil then
    attribute_text("domain", domain, level)
    if not find(domain, "^%.?[%w%-]+[%w%-.]*$") then
      fail(("invalid domain %q"):format(domain), level)
    end
    parts[#parts + 1] = "Domain=" .. domain
  end
  local max_age, expires = opts.max_age, opts.expires
  if delete then
    max_age, expires = 0, 0
  end
  if max_age ~= nil then
    if type(max_age) ~= "number" or max_age ~= floor(max_age) then
      fail("'max_age' must be a whole number of seconds", level)
    end
    parts[#parts + 1] = format("Max-Age=%d", max_age)
  end
  if expires ~= nil then
    if type(expires) == "number" then
      expires = M.http_date(expires)
    else
      attribute_text("expires", expires, level)
    end
    parts[#parts + 1] = "Expires=" .. expires
  end
  local secure = opts.secure
  if secure then parts[#parts + 1] = "Secure" end
  if opts.http_only then parts[#parts + 1] = "HttpOnly" end
  local same_site = opts.same_site
  if same_site ~= nil then
    local canon = type(same_site) == "string" and SAME_SITE[lower(same_site)]
    if not canon then
      fail("'same_site' must be \"Strict\", \"Lax\" or \"None\"", level)
    end
    if canon == "None" and not secure then
      fail("same_site = \"None\" needs secure = true (browsers drop it otherwise)", level)
    end
    parts[#parts + 1] = "SameSite=" .. canon
  end
  if opts.partitioned then
    if not secure then fail("partitioned needs secure = true", level) end
    parts[#parts + 1] = "Partitioned"
  end
  if find(name, "^__Secure%-") and not secure then
    fail(("'%s' needs secure = true (the __Secure- prefix)"):format(name), level)
  end
  if find(name, "^__Host%-") and (not secure or path ~= "/" or domain ~= nil) then
    fail(("'%s' needs secure = true, path = \"/\" and no domain (the __Host- prefix)")
      :format(name), level)
  end
  return concat(parts, "; ")
end

--- res:cookie(name, value [, opts]) -> res: adds a Set-Cookie header.
function M.set(res, name, value, opts)
  return res:header("Set-Cookie", M.format(name, value, opts, 2))
end

return M
