--- URLs for the HTTP client (luasrv.http_client): absolute http(s) URLs parsed strictly into
-- the parts a request needs, a cache of them, and Location values resolved against a base.
local type, tonumber, ipairs = type, tonumber, ipairs
local concat, remove, char, byte = table.concat, table.remove, string.char, string.byte

local M = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = { (n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63 }
    out[#out + 1] = B64:sub(q[1] + 1, q[1] + 1) .. B64:sub(q[2] + 1, q[2] + 1)
      .. (b and B64:sub(q[3] + 1, q[3] + 1) or "=") .. (c and B64:sub(q[4] + 1, q[4] + 1) or "=")
  end
  return concat(out)
end

local function pct_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

local DEFAULT_PORT = { http = 80, https = 443 }

--- Splits an absolute http(s) URL (RFC 3986) into its parts, or returns nil, message.
-- The path and query are kept exactly as given (percent-encoding untouched); the fragment is
-- dropped; userinfo becomes Basic credentials.
local function parse_url(url)
  if type(url) ~= "string" then return nil, "bad url: string expected" end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, "bad url: not an absolute http(s) URL: " .. url end
  scheme = scheme:lower()
  if not DEFAULT_PORT[scheme] then return nil, "bad url: unsupported scheme " .. scheme end
  local authority, target = rest:match("^([^/?#]*)([^#]*)")
  if target:find("[%z\1-\32\127]") then
    return nil, "bad url: space or control character in the path"
  end
  local userinfo
  local at = authority:find("@[^@]*$")
  if at then
    userinfo, authority = authority:sub(1, at - 1), authority:sub(at + 1)
    if userinfo:find("[^%w%-._~%%!$&'()*+,;=:]") or userinfo:find("%%%X") or
       userinfo:find("%%.%X") then
      return nil, "bad url: bad character in the user information"
    end
  end
  local host, port = authority:match("^%[([^%]]*)%](.*)$")
  if host then
    if not host:find("^[%x:.]+$") or not host:find(":") then
      return nil, "bad url: bad IPv6 literal [" .. host .. "]"
    end
  else
    host, port = authority:match("^([^:]*)(.*)$")
    if host:find("[^%w%-._~%%!$&'()*+,;=]") then
      return nil, "bad url: bad character in the host " .. host
    end
    host = pct_decode(host):lower()
  end
  if host == "" then return nil, "bad url: no host" end
  local default = DEFAULT_PORT[scheme]
  if port == "" or port == ":" then
    port = default
  else
    local digits = port:match("^:(%d+)$")
    port = digits and tonumber(digits)
    if not port or port < 1 or port > 65535 then
      return nil, "bad url: bad port in " .. url
    end
  end
  if target == "" then
    target = "/"
  elseif target:sub(1, 1) == "?" then
    target = "/" .. target
  end
  local host_header = host:find(":", 1, true) and "[" .. host .. "]" or host
  if port ~= default then host_header = host_header .. ":" .. port end
  return {
    scheme = scheme, host = host, port = port, target = target, host_header = host_header,
    pool_key = scheme .. "://" .. host_header .. "|",
    request_tail = " " .. target .. " HTTP/1.1\r\nHost: " .. host_header .. "\r\n",
    authorization = userinfo and "Basic " .. base64(pct_decode(userinfo)) or nil,
    origin = scheme .. "://" .. host_header,
    text = scheme .. "://" .. host_header .. target,
  }
end
M.parse = parse_url

-- Parsed URLs by their text: a client calls the same few URLs again and again. The records
-- are never changed once made; the cache is emptied when it grows past 256 entries.
local url_cache, url_cache_size = {}, 0
function M.cached(url)
  local u = url_cache[url]
  if u then return u end
  local err
  u, err = parse_url(url)
  if not u then return nil, err end
  if url_cache_size >= 256 then url_cache, url_cache_size = {}, 0 end
  url_cache[url], url_cache_size = u, url_cache_size + 1
  return u
end

-- Removes "." and ".." segments (RFC 3986 §5.2.4).
local function remove_dots(path)
  local out = {}
  local segments = {}
  for seg in (path .. "/"):gmatch("([^/]*)/") do segments[#segments + 1] = seg end
  if path:sub(-1) == "/" then segments[#segments] = nil end
  for i, seg in ipairs(segments) do
    if seg == ".." then
      if #out > 1 then remove(out) end
      if i == #segments then out[#out + 1] = "" end
    elseif seg == "." then
      if i == #segments then out[#out + 1] = "" end
    else
      out[#out + 1] = seg
    end
  end
  local result = concat(out, "/")
  if path:sub(-1) == "/" and result:sub(-1) ~= "/" then result = result .. "/" end
  if result:sub(1, 1) ~= "/" then result = "/" .. result end
  return result
end

--- The absolute URL a Location value names, relative to the URL `base` (a parsed URL).
local function resolve(base, location)
  if location:find("^%a[%w+.-]*:") then return location end
  if location:sub(1, 2) == "//" then return base.scheme .. ":" .. location end
  local path, query = base.target:match("^([^?]*)(.*)$")
  if location == "" then return base.origin .. path .. query end
  if location:sub(1, 1) == "?" then return base.origin .. path .. location end
  local lpath, lrest = location:match("^([^?#]*)(.*)$")
  if lpath:sub(1, 1) ~= "/" then
    lpath = path:gsub("[^/]*$", "") .. lpath
  end
  return base.origin .. remove_dots(lpath) .. lrest
end
M.resolve = resolve

return M
