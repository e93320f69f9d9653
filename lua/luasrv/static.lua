--- Static files, behind app:static(prefix, dir [, opts]).
--
-- A request path is percent-decoded by the core; here it is normalised ("." and empty
-- segments dropped, ".." resolved) and refused when it climbs out of the root, holds an
-- encoded slash, or names a dot file. The file is then opened below the root with
-- openat2(RESOLVE_BENEATH) (see src/fs.c), so no symbolic link can lead outside either. Every
-- refusal looks like a missing file: 404, or the not_found page.
--
-- Responses carry a strong ETag (inode, size, mtime) and Last-Modified, answer conditional
-- requests (If-None-Match, If-Modified-Since -> 304; If-Match, If-Unmodified-Since -> 412),
-- single byte ranges (206, 416 with "Content-Range: bytes */SIZE", If-Range) and HEAD. The
-- body goes out through res:sendfile: one read for a small file, bounded pieces for a large
-- one, never the whole file in Lua.
local core = require "luasrv.core"
local mime = require "luasrv.mime"

local type, error, pairs, ipairs, tostring, tonumber, setmetatable = type, error, pairs, ipairs,
  tostring, tonumber, setmetatable
local floor = math.floor
local find, sub, byte, gsub, gmatch, match, lower, format, date = string.find, string.sub,
  string.byte, string.gsub, string.gmatch, string.match, string.lower, string.format, os.date
local concat = table.concat
local fs_root = core.fs.root
local sendfile = core.http_sendfile
-- Called directly rather than as req:header(...): a request's __index is a C function that
-- looks fields up first, and these calls are on every file's path.
local header = core.http_request_methods.header

local M = {}

local Static = {}
Static.__index = Static
M.Static = Static

local OPTIONS = {
  index = "string", not_found = "string", max_age = "number", precompressed = "boolean",
  listing = "boolean", dotfiles = "boolean", headers = "table", open_files = "number",
}

local ALLOW = "GET, HEAD, OPTIONS"

--- M.new(dir, opts) -> a static file server for dir. opts: index (default "index.html";
-- false: none), not_found (a file below dir served with status 404), max_age (seconds, for
-- Cache-Control), precompressed (serve NAME.br / NAME.gz when the client accepts them),
-- listing (list directories without an index), dotfiles (serve names starting with "."; by
-- default only ".well-known" is), headers (extra response headers), open_files (how many files
-- to keep open between requests, default 128; 0: none; see fs.root in src/fs.c).
function M.new(dir, opts, level)
  level = (level or 1) + 1
  if type(dir) ~= "string" or dir == "" then
    error("bad argument #2 to 'static' (directory path expected)", level)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #3 to 'static' (table expected)", level) end
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then error(("static: unknown option '%s'"):format(tostring(k)), level) end
    if type(v) ~= want and not (k == "index" and v == false) then
      error(("static: option '%s' must be a %s"):format(k, want), level)
    end
  end
  if opts.max_age and (opts.max_age < 0 or opts.max_age ~= floor(opts.max_age)) then
    error("static: option 'max_age' must be a whole number of seconds", level)
  end
  local index = opts.index
  if index == nil then index = "index.html" end
  local extra = {}
  for name, value in pairs(opts.headers or {}) do
    if type(name) ~= "string" or not find(name, "^[!#$%%&'*+%-.^_`|~%w]+$")
        or (type(value) ~= "string" and type(value) ~= "number") or find(tostring(value), "[\r\n%z]") then
      error(("static: invalid header %s"):format(tostring(name)), level)
    end
    extra[#extra + 1] = { name, value }
  end
  -- A directory that is not there (yet) is served as empty (every file 404), which is easy
  -- to miss: say so when the mount is made. Creating it later works without a restart.
  local kind = core.fs.stat(dir)
  if kind ~= "directory" then
    local info = debug.getinfo(level, "Sl")
    local where = info and info.currentline and info.currentline > 0
      and (info.short_src .. ":" .. info.currentline .. ": ") or ""
    core.log("warn", ("%sstatic: %s is %s: every file below it answers 404 until it exists")
      :format(where, dir, kind and ("a " .. kind .. ", not a directory") or "missing"))
  end
  return setmetatable({
    dir = dir,
    root = fs_root(dir, floor(opts.open_files or 128)),
    index = index or nil,
    not_found_page = opts.not_found,
    cache_control = opts.max_age and ("max-age=" .. floor(opts.max_age)) or nil,
    precompressed = opts.precompressed or false,
    listing = opts.listing or false,
    dotfiles = opts.dotfiles or false,
    extra = extra,
  }, Static)
end

-- ---- dates ----------------------------------------------------------------------------------

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                 Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

-- Seconds since the epoch of a UTC civil time (H. Hinnant's days_from_civil).
local function utc_time(y, m, d, hh, mm, ss)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + hh * 3600 + mm * 60 + ss
end

--- Parses an HTTP date in any of the three forms RFC 9110 §5.6.7 asks recipients to accept;
-- returns seconds since the epoch, or nil.
function M.parse_date(s)
  local d, mon, y, hh, mm, ss = match(s, "^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d then
    d, mon, y, hh, mm, ss = match(s, "^%a+, (%d%d)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if d then
      y = tonumber(y)
      y = y < 70 and 2000 + y or 1900 + y
    else
      mon, d, hh, mm, ss, y = match(s, "^%a+ (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
      if not mon then return nil end
    end
  end
  local m = MONTHS[mon]
  if not m then return nil end
  return utc_time(tonumber(y), m, tonumber(d), tonumber(hh), tonumber(mm), tonumber(ss))
end

local http_dates, http_dates_n = {}, 0

--- The IMF-fixdate of a time in seconds (cached: files share few distinct times).
local function http_date(t)
  local s = http_dates[t]
  if s then return s end
  if http_dates_n >= 1024 then http_dates, http_dates_n = {}, 0 end
  s = date("!%a, %d %b %Y %H:%M:%S GMT", t)
  http_dates[t] = s
  http_dates_n = http_dates_n + 1
  return s
end
M.http_date = http_date

-- ---- validators and ranges --------------------------------------------------------------------

-- Whether an If-Match / If-None-Match list matches etag: "*", or a listed tag compared
-- strongly (both strong and equal) or weakly (equal opaque parts).
local function etag_matches(list, etag, strong)
  if list == etag then return true end
  if match(list, "^%s*%*%s*$") then return true end
  for weak, tag in gmatch(list, '(W?/?)("[^"]*")') do
    if tag == etag and not (strong and weak ~= "") then return true end
  end
  return false
end
M.etag_matches = etag_matches

--- Parses a Range header for a representation of `size` bytes. Returns first, last (a
-- satisfiable single range), false (unsatisfiable: 416), or nil (absent, malformed or several
-- ranges: the whole representation is sent, as RFC 9110 §14.2 allows).
function M.parse_range(h, size)
  local a, b = match(h, "^%s*[Bb][Yy][Tt][Ee][Ss]%s*=%s*(%d*)%s*%-%s*(%d*)%s*$")
  if not a or (a == "" and b == "") then return nil end
  if a == "" then
    local n = tonumber(b)
    if n == 0 or size == 0 then return false end
    local first = n >= size and 0 or size - floor(n)
    return first, size - 1
  end
  local first = tonumber(a)
  local last = b ~= "" and tonumber(b) or nil
  if last and last < first then return nil end
  if first >= size then return false end
  first = floor(first)
  if not last or last >= size then last = size - 1 else last = floor(last) end
  return first, last
end

-- Whether If-Range allows the range: an entity tag that matches strongly, or the exact
-- Last-Modified time.
local function if_range_ok(h, etag, mtime)
  if byte(h, 1) == 34 or sub(h, 1, 2) == "W/" then -- '"'
    return h == etag
  end
  return M.parse_date(h) == mtime
end

-- Picks the precompressed variant the client accepts: "br", "gzip" or nil.
local function accepted_encoding(ae)
  local br, gz
  for coding, params in gmatch(lower(ae), "([%w%-*]+)%s*([^,]*)") do
    local q = tonumber(match(params, "q%s*=%s*([%d.]+)") or "1") or 1
    if q > 0 then
      if coding == "br" then br = true
      elseif coding == "gzip" or coding == "x-gzip" then gz = true
      elseif coding == "*" then br, gz = true, true end
    end
  end
  return br and "br" or gz and "gzip" or nil
end
M.accepted_encoding = accepted_encoding

-- ---- paths ----------------------------------------------------------------------------------

-- Normalises a decoded path ("/a/./b//c/../d") into a path relative to the root ("a/b/d"),
-- or nil when it climbs out of the root or names a hidden dot file.
local function normalize(path, dotfiles)
  local segs, n = {}, 0
  for seg in gmatch(path, "[^/]+") do
    if seg == ".." then
      if n == 0 then return nil end
      segs[n] = nil
      n = n - 1
    elseif seg ~= "." then
      if byte(seg, 1) == 46 and not dotfiles and seg ~= ".well-known" then return nil end
      n = n + 1
      segs[n] = seg
    end
  end
  return concat(segs, "/")
end
M.normalize = normalize

local function html_escape(s)
  return (gsub(s, '[&<>"\']', { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function escape_byte(c) return format("%%%02X", byte(c)) end

local function url_escape(s)
  return (gsub(s, "[^%w%-._~!$&'()*+,;=:@]", escape_byte))
end

-- A path for a Location header: each segment escaped, the slashes kept.
local function path_escape(s)
  return (gsub(s, "[^%w%-._~!$&'()*+,;=:@/]", escape_byte))
end

-- ---- responses ------------------------------------------------------------------------------

local function add_common(self, res)
  if self.cache_control then res:header("Cache-Control", self.cache_control) end
  if self.precompressed then res:header("Vary", "Accept-Encoding") end
  local extra = self.extra
  for i = 1, #extra do res:header(extra[i][1], extra[i][2]) end
end

-- Answers with the not_found page (true), or returns false for the app's own 404.
function Static:not_found(req, res)
  local page = self.not_found_page
  if not page then return false end
  local f <close> = self.root:open(page)
  if not f then return false end
  res:status(404)
  res:header("Content-Type", mime.content_type(page))
  res:header("Cache-Control", "no-cache")
  if req.method ~= "GET" and req.method ~= "HEAD" then res:header("Allow", ALLOW) end
  sendfile(res, f)
  return true
end

local function listing_page(self, res, rel, path)
  local entries, err = self.root:list(rel == "" and "." or rel)
  if not entries then return false, err end
  local title = html_escape(path)
  local out = { "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ", title,
    "</title></head>\n<body><h1>Index of ", title, "</h1>\n<ul>\n" }
  if path ~= "/" then out[#out + 1] = "<li><a href=\"../\">../</a></li>\n" end
  for _, e in ipairs(entries) do -- sorted by name
    if self.dotfiles or byte(e.name, 1) ~= 46 then
      local slash = e.kind == "directory" and "/" or ""
      out[#out + 1] = format("<li><a href=\"%s%s\">%s%s</a></li>\n",
        html_escape(url_escape(e.name)), slash, html_escape(e.name), slash)
    end
  end
  out[#out + 1] = "</ul></body></html>\n"
  add_common(self, res)
  res:send(concat(out))
  return true
end

-- Sends file f (open, with its size, mtime and tag) as the answer to a GET or HEAD, honouring
-- the conditional and range headers.
local function send(self, req, res, f, size, mtime, etag, ctype, encoding)
  local last_modified = http_date(mtime)
  local h = header(req, "if-match")
  local status
  if h then
    if not etag_matches(h, etag, true) then status = 412 end
  else
    h = header(req, "if-unmodified-since")
    local t = h and M.parse_date(h)
    if t and mtime > t then status = 412 end
  end
  if not status then
    h = header(req, "if-none-match")
    if h then
      if etag_matches(h, etag, false) then status = 304 end
    else
      h = header(req, "if-modified-since")
      if h and (h == last_modified or (M.parse_date(h) or -1) >= mtime) then status = 304 end
    end
  end
  if status then
    res:status(status)
    res:header("ETag", etag)
    res:header("Last-Modified", last_modified)
    add_common(self, res)
    if status == 412 then
      res:header("Content-Type", "text/plain; charset=utf-8")
      return res:send("412 Precondition Failed\n")
    end
    return res:send()
  end
  local offset, length = 0, size
  h = header(req, "range")
  if h then
    local ir = header(req, "if-range")
    if not ir or if_range_ok(ir, etag, mtime) then
      local first, last = M.parse_range(h, size)
      if first == false then
        res:status(416)
        res:header("Content-Range", "bytes */" .. size)
        res:header("Content-Type", "text/plain; charset=utf-8")
        return res:send("416 Range Not Satisfiable\n")
      elseif first then
        offset, length = first, last - first + 1
        res:status(206)
        res:header("Content-Range", format("bytes %d-%d/%d", first, last, size))
      end
    end
  end
  res:header("Content-Type", ctype)
  res:header("ETag", etag)
  res:header("Last-Modified", last_modified)
  res:header("Accept-Ranges", "bytes")
  if encoding then res:header("Content-Encoding", encoding) end
  add_common(self, res)
  return sendfile(res, f, offset, length)
end

local GONE = { ECLOSED = true, EPIPE = true, ECONNRESET = true, ETIMEDOUT = true }

-- Opens rel (a file, not a directory) and serves it; a precompressed sibling instead when
-- allowed. Returns true, or false when there is no such file.
local function serve_file(self, req, res, rel, f, size, mtime, tag)
  local ctype = mime.content_type(rel)
  local encoding
  if self.precompressed then
    local ae = header(req, "accept-encoding")
    local want = ae and accepted_encoding(ae)
    if want then
      local g, gsize, gmtime, gtag = self.root:open(rel .. (want == "br" and ".br" or ".gz"))
      if not g and want == "br" and find(lower(ae), "gzip", 1, true) then
        want = "gzip"
        g, gsize, gmtime, gtag = self.root:open(rel .. ".gz")
      end
      if g then
        f:close()
        f, size, mtime, tag, encoding = g, gsize, gmtime, gtag, want
      end
    end
  end
  local ok, err, code = send(self, req, res, f, size, mtime, tag, ctype, encoding)
  f:close()
  -- A client that went away is no error of ours; a file that could not be read is.
  if not ok and not GONE[code] then
    error(("static: cannot send %s: %s"):format(rel, tostring(err)), 0)
  end
  return true
end

local NOT_FOUND = { ENOENT = true, ENOTDIR = true, ELOOP = true, ENAMETOOLONG = true,
                    EXDEV = true, EINVAL = true }

--- static:serve(req, res, path): answers the request for `path` (below the mount, starting
-- with "/"). Returns true when it answered, false when there is nothing to serve (the app
-- then answers 404 its own way).
function Static:serve(req, res, path)
  local raw = req.raw_path
  if find(raw, "%", 1, true) and find(raw, "%%2[fF]") then return self:not_found(req, res) end
  local rel
  if not find(path, "/.", 1, true) and not find(path, "//", 1, true) then
    rel = sub(path, 2) -- already normal (the usual case): no allocation beyond this
  else
    rel = normalize(path, self.dotfiles)
    if not rel then return self:not_found(req, res) end
    -- "/a/", "/a/." and "/a/b/.." all name a directory: a file asked for that way is 404.
    if rel ~= "" and (byte(path, -1) == 47 or find(path, "/%.%.?$")) then rel = rel .. "/" end
  end
  local method = req.method
  if method ~= "GET" and method ~= "HEAD" then
    if method == "OPTIONS" then
      res:status(204)
      res:header("Allow", ALLOW)
      res:send()
      return true
    end
    local f <close>, _, code = self.root:open(rel == "" and "." or rel)
    if not f and code ~= "EISDIR" then return self:not_found(req, res) end
    res:status(405)
    res:header("Allow", ALLOW)
    res:header("Content-Type", "text/plain; charset=utf-8")
    res:send("405 Method Not Allowed\n")
    return true
  end
  local f, size, mtime, tag = self.root:open(rel == "" and "." or rel)
  if f then return serve_file(self, req, res, rel, f, size, mtime, tag) end
  local code = mtime -- nil, message, code
  if code == "EISDIR" then
    if byte(path, -1) ~= 47 then
      -- /dir -> /dir/, so that the index page's relative links resolve below it. The
      -- target is built from the normalised path, never from the raw one: "//evil.com/.."
      -- must not become "//evil.com/../", a protocol-relative URL to another host.
      local q = req.query_string
      local full = req.path
      local prefix = sub(full, 1, #full - #path)
      local dir = gsub(prefix, "/+$", "") .. "/" .. (rel ~= "" and rel .. "/" or "")
      local target = gsub(path_escape(dir), "^/+", "/")
      res:redirect(target .. (q ~= "" and "?" .. q or ""), 301)
      return true
    end
    if rel ~= "" and byte(rel, -1) ~= 47 then rel = rel .. "/" end
    if self.index then
      local irel = rel .. self.index
      f, size, mtime, tag = self.root:open(irel)
      if f then return serve_file(self, req, res, irel, f, size, mtime, tag) end
    end
    if self.listing and listing_page(self, res, rel, req.path) then return true end
    return self:not_found(req, res)
  end
  if NOT_FOUND[code] then return self:not_found(req, res) end
  if code == "EACCES" or code == "EPERM" then
    res:status(403)
    res:header("Content-Type", "text/plain; charset=utf-8")
    res:send("403 Forbidden\n")
    return true
  end
  error(("static: cannot open %s below %s: %s"):format(rel, self.dir, tostring(size)), 0)
end

return M
