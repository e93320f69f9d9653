--- Request forms, behind req:form([opts]): application/x-www-form-urlencoded and
-- multipart/form-data (RFC 7578), both parsed as a stream from req:body_reader(), so a body is
-- never held whole in memory. Fields are kept in memory (bounded by max_field_size); a file
-- part stays in memory up to spool_threshold bytes and beyond that is written to a temporary
-- file, which is removed when the request ends, however it ends.
--
-- A body over a limit is answered 413, a malformed one 400, another content type 415, each
-- with a plain-text message saying which: req:form() raises, and the server turns that error
-- into the answer (the connection then closes, as the rest of the body is unread). A handler
-- that wants to answer itself can pcall(req.form, req): the error is a table whose
-- tostring() is the message, with fields status and message.
local core = require "luasrv.core"

local type, error, tostring, tonumber, setmetatable, pairs = type, error, tostring, tonumber,
  setmetatable, pairs
local find, sub, lower, match, gsub, char, format = string.find, string.sub, string.lower,
  string.match, string.gsub, string.char, string.format
local concat, open, remove, rename = table.concat, io.open, os.remove, os.rename
local http_reject, http_tmpfile = core.http_reject, core.http_tmpfile

local M = {}

--- The limits and settings, and their defaults (req:form(opts) overrides them per call).
M.defaults = {
  max_size = nil,             -- bytes of the whole body (nil: the listener's max_body only)
  max_fields = 1000,          -- parts or name=value pairs
  max_field_size = 1048576,   -- bytes of one field's value (fields are held in memory)
  max_file_size = nil,        -- bytes of one file (nil: no limit but max_size)
  max_part_header = 8192,     -- bytes of one part's header section
  spool_threshold = 65536,    -- a file larger than this goes to a temporary file
  tmpdir = nil,               -- where those go (nil: $TMPDIR or /tmp)
}

local OPTIONS = {
  max_size = true, max_fields = true, max_field_size = true, max_file_size = true,
  max_part_header = true, spool_threshold = true, tmpdir = true,
}

local FORM_KEY = {} -- the parsed form, cached on the request under this key

local FormError = {}
FormError.__index = FormError
FormError.__tostring = function(e) return e.message end
M.FormError = FormError

local REASONS = { [400] = "Bad Request", [413] = "Content Too Large",
                  [415] = "Unsupported Media Type" }

-- Ends the request with `status` and a message saying why.
local function reject(req, status, msg)
  msg = "form: " .. msg
  http_reject(req, status, format("%d %s: %s\n", status, REASONS[status], msg))
  error(setmetatable({ status = status, message = msg, http_status = status }, FormError), 0)
end

local function option(opts, name)
  local v = opts and opts[name]
  if v == nil then v = M.defaults[name] end
  return v
end

-- Adds value under name: a single value as it is, repeated names as a list (as req.query).
local function add(form, name, value)
  local old = form[name]
  if old == nil then
    form[name] = value
  elseif type(old) == "table" and old[1] ~= nil and getmetatable(old) == nil then
    old[#old + 1] = value
  else
    form[name] = { old, value }
  end
end

-- The body, piece by piece; raises (400) if the client went away before the end.
local function reader(req)
  local next_piece = req:body_reader()
  return function()
    local piece, err = next_piece()
    if piece == nil and err ~= nil then
      reject(req, 400, "the request body was cut short (" .. tostring(err) .. ")")
    end
    return piece
  end
end

-- ---- application/x-www-form-urlencoded ------------------------------------------------------

local function hex_char(h) return char(tonumber(h, 16)) end

--- Decodes one application/x-www-form-urlencoded component ('+' is a space).
function M.decode(s)
  s = gsub(s, "+", " ")
  return (gsub(s, "%%(%x%x)", hex_char))
end

local function urlencoded(req, opts)
  local form, n = {}, 0
  local max_fields, max_field = option(opts, "max_fields"), option(opts, "max_field_size")
  local function pair(s)
    if s == "" then return end
    n = n + 1
    if n > max_fields then reject(req, 413, format("more than %d fields", max_fields)) end
    local eq = find(s, "=", 1, true)
    local name = M.decode(eq and sub(s, 1, eq - 1) or s)
    local value = eq and M.decode(sub(s, eq + 1)) or ""
    add(form, name, value)
    form[n] = { name = name, value = value }
  end
  local carry = ""
  local max_size, total = option(opts, "max_size"), 0
  for piece in reader(req) do
    total = total + #piece
    if max_size and total > max_size then
      reject(req, 413, format("the body is larger than %d bytes", max_size))
    end
    local buf, pos = carry .. piece, 1
    while true do
      local amp = find(buf, "&", pos, true)
      if not amp then break end
      pair(sub(buf, pos, amp - 1))
      pos = amp + 1
    end
    carry = sub(buf, pos)
    if #carry > max_field then
      reject(req, 413, format("a field is larger than %d bytes", max_field))
    end
  end
  pair(carry)
  return form
end

-- ---- multipart/form-data ----------------------------------------------------------------------

-- A file part: name, filename, content_type, size, headers, and either path (spooled to a
-- temporary file) or data (kept in memory).
local File = {}
File.__index = File
M.File = File

--- file:read() -> the content (from memory or from its temporary file) | nil, message.
function File:read()
  if self.data then return self.data end
  local f, err = open(self.path, "rb")
  if not f then return nil, err end
  local data = f:read("a")
  f:close()
  return data
end

--- file:move(dest) -> true | nil, message: puts the content at dest (a rename when the file
-- was spooled and dest is on the same file system, a copy otherwise). Afterwards file.path is
-- dest and the file is no longer removed at the end of the request.
function File:move(dest)
  if type(dest) ~= "string" then error("bad argument #1 to 'move' (string expected)", 2) end
  if self.path and rename(self.path, dest) then
    -- The spool file was private (0600) while it was temporary; a moved upload gets the mode
    -- any new file gets (0666 less the umask), as a small upload written below does.
    core.fs.chmod(dest)
    self.path, self.data = dest, nil
    return true
  end
  local out, err = open(dest, "wb")
  if not out then return nil, err end
  local ok, werr = true, nil
  if self.data then
    ok, werr = out:write(self.data)
  else
    local src, rerr = open(self.path, "rb")
    if not src then
      out:close()
      remove(dest)
      return nil, rerr
    end
    while ok do
      local block = src:read(65536)
      if not block then break end
      ok, werr = out:write(block)
    end
    src:close()
  end
  local closed, cerr = out:close()
  if not ok or not closed then
    remove(dest)
    return nil, werr or cerr
  end
  if self.path then remove(self.path) end
  self.path, self.data = dest, nil
  return true
end

-- Parses the parameters of a header value ('form-data; name="a"; filename="b"') into a table
-- with lower-case keys. In a quoted string a backslash escapes only '"' and '\\': browsers
-- do not escape (they send '"' as %22), and a Windows path keeps its backslashes.
local function header_params(value)
  local params, pos, len = {}, 1, #value
  while pos <= len do
    local s, e, key = find(value, "^;%s*([^=;%s]+)%s*=%s*", pos)
    if not s then
      local semi = find(value, ";", pos + 1, true)
      if not semi then break end
      pos = semi
    else
      key = lower(key)
      pos = e + 1
      if sub(value, pos, pos) == '"' then
        local buf, i = {}, pos + 1
        while i <= len do
          local ch = sub(value, i, i)
          local nxt = sub(value, i + 1, i + 1)
          if ch == "\\" and (nxt == '"' or nxt == "\\") then
            buf[#buf + 1] = nxt
            i = i + 2
          elseif ch == '"' then
            break
          else
            buf[#buf + 1] = ch
            i = i + 1
          end
        end
        params[key] = concat(buf)
        pos = i + 1
      else
        local v = match(value, "^[^;]*", pos)
        params[key] = gsub(v, "%s+$", "")
        pos = pos + #v
      end
      while sub(value, pos, pos) ~= ";" and pos <= len do pos = pos + 1 end
    end
  end
  return params
end
M.header_params = header_params

-- A client's file name as a plain base name: no directories (either slash), no controls.
local function clean_filename(name)
  name = match(name, "([^/\\]*)$")
  return (gsub(name, "%c", ""))
end

-- RFC 8187 ext-value ("UTF-8''%e2%82%ac.txt") -> its text, or nil.
local function ext_value(v)
  local charset, text = match(v, "^([%w!#$%%&+%-^_`{}~]+)'[^']*'(.*)$")
  if not charset then return nil end
  return (gsub(text, "%%(%x%x)", hex_char))
end

local function boundary_of(ctype)
  local s, e = find(lower(ctype), ";%s*boundary%s*=%s*")
  if not s then return nil end
  local b
  if sub(ctype, e + 1, e + 1) == '"' then
    b = match(ctype, '^"([^"]*)"', e + 1)
  else
    b = match(ctype, "^[^;%s]+", e + 1)
  end
  -- RFC 2046: 1 to 70 characters from a fixed set, not ending in a space.
  if not b or #b < 1 or #b > 70 or find(b, "[^%w'()+_,%-./:=? ]") or sub(b, -1) == " " then
    return nil
  end
  return b
end

local function parse_part_headers(req, block)
  local headers = {}
  for line in (block .. "\r\n"):gmatch("(.-)\r\n") do
    if line ~= "" then
      local name, value = match(line, "^([!#$%%&'*+%-.^_`|~%w]+):[ \t]*(.-)[ \t]*$")
      if not name then reject(req, 400, "malformed part header line") end
      headers[lower(name)] = value
    end
  end
  local cd = headers["content-disposition"]
  if not cd or lower(match(cd, "^%s*([^;%s]*)")) ~= "form-data" then
    reject(req, 400, "a part without Content-Disposition: form-data")
  end
  local params = header_params(match(cd, "^%s*[^;]*(.*)$"))
  if not params.name then reject(req, 400, "a part without a name") end
  return headers, params
end

local function multipart(req, opts, ctype)
  local boundary = boundary_of(ctype)
  if not boundary then reject(req, 400, "missing or invalid multipart boundary") end
  local max_size, max_fields = option(opts, "max_size"), option(opts, "max_fields")
  local max_field, max_file = option(opts, "max_field_size"), option(opts, "max_file_size")
  local max_header, threshold = option(opts, "max_part_header"), option(opts, "spool_threshold")
  local tmpdir = option(opts, "tmpdir")
  local delim = "\r\n--" .. boundary
  local keep = #delim + 1 -- a delimiter (and what follows it) may straddle two pieces

  local form, nparts = {}, 0
  local part          -- the part being read: its table, and how its content is gathered
  local chunks, size  -- in-memory content of the part
  local out           -- the io file of a spooled part
  local state = "preamble"
  -- "\r\n" in front: the first delimiter may open the body without a line break before it.
  local buf, pos, total = "\r\n", 1, 0
  local next_piece = reader(req)

  local function content(data)
    if data == "" then return end
    size = size + #data
    if part.filename then
      if max_file and size > max_file then
        reject(req, 413, format("file '%s' is larger than %d bytes", part.name, max_file))
      end
      if out then
        local ok, err = out:write(data)
        if not ok then reject(req, 413, "cannot write the upload: " .. tostring(err)) end
        return
      end
      if size > threshold then
        local path, err = http_tmpfile(req, tmpdir)
        if not path then error("form: cannot create a temporary file: " .. tostring(err), 0) end
        out, err = open(path, "wb")
        if not out then error("form: cannot open a temporary file: " .. tostring(err), 0) end
        part.path = path
        for i = 1, #chunks do out:write(chunks[i]) end
        chunks = nil
        local ok, werr = out:write(data)
        if not ok then reject(req, 413, "cannot write the upload: " .. tostring(werr)) end
        return
      end
    elseif size > max_field then
      reject(req, 413, format("field '%s' is larger than %d bytes", part.name, max_field))
    end
    chunks[#chunks + 1] = data
  end

  local function finish_part()
    if part.filename then
      part.size = size
      if out then
        local ok, err = out:close()
        out = nil
        if not ok then reject(req, 413, "cannot write the upload: " .. tostring(err)) end
      else
        part.data = concat(chunks)
      end
      -- An <input type=file> with nothing chosen sends an empty part with an empty name.
      if part.filename == "" and size == 0 then return end
      setmetatable(part, File)
      add(form, part.name, part)
    else
      part.value = concat(chunks)
      add(form, part.name, part.value)
    end
    form[#form + 1] = part
  end

  while state ~= "done" do
    local progressed = false
    if state == "preamble" or state == "body" then
      local at = find(buf, delim, pos, true)
      if at then
        if state == "body" then
          content(sub(buf, pos, at - 1))
          finish_part()
        end
        pos = at + #delim
        state = "boundary"
        progressed = true
      else
        -- Everything but a possible start of the delimiter is content (or preamble).
        local safe = #buf - keep
        if safe >= pos then
          if state == "body" then content(sub(buf, pos, safe)) end
          pos = safe + 1
        end
      end
    elseif state == "boundary" then
      -- After a delimiter: "--" ends the body; otherwise optional blanks, then CRLF.
      local two = sub(buf, pos, pos + 1)
      if two == "--" then
        state = "done"
        progressed = true
      elseif #buf - pos >= 1 then
        local s, e = find(buf, "^[ \t]*\r\n", pos)
        if s then
          pos = e - 1 -- at the CRLF, so an empty header section is "\r\n\r\n" from here
          state = "headers"
          progressed = true
        elseif find(buf, "[^ \t\r]", pos) or #buf - pos > 256 then
          reject(req, 400, "malformed multipart boundary line")
        end
      end
    elseif state == "headers" then
      local e = find(buf, "\r\n\r\n", pos, true)
      if e then
        if e - pos > max_header then
          reject(req, 413, format("a part header is larger than %d bytes", max_header))
        end
        nparts = nparts + 1
        if nparts > max_fields then reject(req, 413, format("more than %d fields", max_fields)) end
        local headers, params = parse_part_headers(req, sub(buf, pos + 2, e - 1))
        local filename = params["filename*"] and ext_value(params["filename*"]) or params.filename
        part = { name = params.name, headers = headers }
        if filename then
          part.filename = clean_filename(filename)
          part.content_type = headers["content-type"] or "application/octet-stream"
        end
        chunks, size = {}, 0
        pos = e + 4 -- the content; an empty one is followed by the delimiter at once
        state = "body"
        progressed = true
      elseif #buf - pos > max_header then
        reject(req, 413, format("a part header is larger than %d bytes", max_header))
      end
    end
    if not progressed and state ~= "done" then
      local piece = next_piece()
      if not piece then
        if state == "preamble" then reject(req, 400, "no multipart boundary in the body") end
        reject(req, 400, "the multipart body ends before its closing boundary")
      end
      total = total + #piece
      if max_size and total > max_size then
        reject(req, 413, format("the body is larger than %d bytes", max_size))
      end
      buf = sub(buf, pos) .. piece
      pos = 1
    end
  end
  -- The epilogue after the closing delimiter is ignored, but the body is read to its end so
  -- that the connection can carry the next request.
  while next_piece() do end
  return form
end

-- ---- entry ------------------------------------------------------------------------------------

--- req:form([opts]) -> the form: form[name] is the value (a string for a field, a File for a
-- file part; a list of them when the name repeats) and form[1..n] every part in order
-- ({ name, value } or a File). The result is cached on the request.
function M.parse(req, opts)
  local cached = req[FORM_KEY]
  if cached then return cached end
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #1 to 'form' (table expected, got " .. type(opts) .. ")", 2)
    end
    for k in pairs(opts) do
      if not OPTIONS[k] then error("form: unknown option '" .. tostring(k) .. "'", 2) end
    end
  end
  local ctype = req:header("content-type")
  local form
  if not ctype then
    local length = req:header("content-length")
    if (length == nil or length == "0") and req:header("transfer-encoding") == nil then
      form = {}
    else
      reject(req, 415, "a body without a Content-Type")
    end
  else
    local max_size = option(opts, "max_size")
    local length = tonumber(req:header("content-length") or "")
    if max_size and length and length > max_size then
      reject(req, 413, format("the body is larger than %d bytes", max_size))
    end
    local mtype = lower(match(ctype, "^%s*([^;%s]*)"))
    if mtype == "application/x-www-form-urlencoded" then
      form = urlencoded(req, opts)
    elseif mtype == "multipart/form-data" then
      form = multipart(req, opts, ctype)
    else
      reject(req, 415, "expected application/x-www-form-urlencoded or multipart/form-data, not "
        .. mtype)
    end
  end
  req[FORM_KEY] = form
  return form
end

return M
