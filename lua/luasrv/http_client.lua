--- srv.http.request, get, post and pool_stats: the outbound HTTP/1.1 client.
-- Connections are luasrv.Conn objects from srv.tcp.connect (name lookup, Happy Eyeballs, TLS,
-- timeouts: all in C), kept alive in a pool per process; responses are parsed by llhttp in
-- response mode (src/http_client.c). This module writes requests, drives the parser, follows
-- redirects when asked and keeps the pool.
local core = require "luasrv.core"

local type, tostring, pairs, ipairs, error, setmetatable =
  type, tostring, pairs, ipairs, error, setmetatable
local concat, format = table.concat, string.format
local math_min, math_huge = math.min, math.huge
local monotime = core.monotime

local M = {}

local DEFAULTS = {
  timeout = 60,           -- the whole request, connect to the end of the body
  connect_timeout = 10,   -- lookup, connect and TLS handshake
  read_timeout = 30,      -- each wait for more of the answer
  max_body = 8 * 1024 * 1024,
  expect_continue = 1024 * 1024, -- bodies at least this large ask for 100 Continue first
  continue_wait = 1,      -- how long to wait for the 100 Continue before sending anyway
}

local USER_AGENT = "luasrv/" .. core.version
local NO_HEADERS = setmetatable({}, { __newindex = function() error("read-only table", 2) end })
local DEFAULT_TAIL = "User-Agent: " .. USER_AGENT .. "\r\n\r\n"
local KNOWN_METHODS = { GET = true, HEAD = true, POST = true, PUT = true, DELETE = true,
  OPTIONS = true, PATCH = true, TRACE = true }
local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true, TRACE = true, PUT = true,
  DELETE = true }

local url_mod = require "luasrv.http_url"
local parse_url, cached_url, resolve = url_mod.parse, url_mod.cached, url_mod.resolve
M.parse_url, M.resolve = parse_url, resolve

local pool = require "luasrv.http_pool"
local pool_for, pool_take, pool_put, pool_drop, tls_key = pool.pool_for, pool.take,
  pool.put, pool.drop, pool.tls_key
M.pool_stats, M.pool_configure, M.pool_close = pool.pool_stats, pool.configure, pool.close

---------------------------------------------------------------------------------------------
-- Requests

local function check_token(name, what)
  if type(name) ~= "string" or name == "" or name:find("[^%w!#$%%&'*+%-.^_`|~]") then
    error(format("bad %s %q (not a token)", what, tostring(name)), 4)
  end
end

local function check_value(value, name)
  local tv = type(value)
  if tv == "number" then return tostring(value) end
  if tv ~= "string" or value:find("[%z\r\n]") then
    error(format("bad value for header %q (a string without CR, LF or NUL expected)", name), 4)
  end
  return value
end

-- Header names already found to be tokens (a proxy sends the same few again and again);
-- emptied when it grows past 512 names.
local good_names, good_names_size = {}, 0

-- The caller's headers, checked (names are tokens, values have no line breaks) and copied:
-- { name = value or { values } }, numbers turned into strings.
local function check_headers(headers)
  local out = {}
  for name, value in pairs(headers) do
    if not good_names[name] then
      if type(name) ~= "string" then error("bad header name (string expected)", 3) end
      check_token(name, "header name")
      if good_names_size >= 512 then good_names, good_names_size = {}, 0 end
      good_names[name], good_names_size = true, good_names_size + 1
    end
    if type(value) == "table" then
      local list = {}
      for i, v in ipairs(value) do list[i] = check_value(v, name) end
      out[name] = list
    else
      out[name] = check_value(value, name)
    end
  end
  return out
end

-- The request head as a list of strings, and what the caller's headers set themselves.
local function build_head(req, url, body_len, chunked, expect)
  local headers = req.headers
  if headers == NO_HEADERS and not body_len and not chunked and not url.authorization then
    return req.method .. url.request_tail .. DEFAULT_TAIL
  end
  local parts = { req.method, url.request_tail }
  local n = 2
  local has = {}
  for name, value in pairs(headers) do
    local lname = name:lower()
    if lname ~= "host" then
      if type(value) == "table" then
        for _, v in ipairs(value) do
          parts[n + 1], parts[n + 2], parts[n + 3], parts[n + 4] = name, ": ", v, "\r\n"
          n = n + 4
        end
      else
        parts[n + 1], parts[n + 2], parts[n + 3], parts[n + 4] = name, ": ", value, "\r\n"
        n = n + 4
      end
      has[lname] = true
      if lname == "connection" and type(value) == "string" and value:lower():find("close") then
        req.no_reuse = true -- the server will close after answering
      end
    end
  end
  if not has["user-agent"] then
    parts[n + 1], n = "User-Agent: " .. USER_AGENT .. "\r\n", n + 1
  end
  if url.authorization and not has.authorization then
    parts[n + 1], n = "Authorization: " .. url.authorization .. "\r\n", n + 1
  end
  if body_len and not has["content-length"] then
    if body_len > 0 or req.method == "POST" or req.method == "PUT" or req.method == "PATCH" then
      parts[n + 1], n = "Content-Length: " .. body_len .. "\r\n", n + 1
    end
  elseif chunked then
    parts[n + 1], n = "Transfer-Encoding: chunked\r\n", n + 1
  end
  if expect then parts[n + 1], n = "Expect: 100-continue\r\n", n + 1 end
  parts[n + 1] = "\r\n"
  return concat(parts)
end

-- The timeout each pooled connection was last given (conn:settimeout is skipped when a request
-- wants the same); weak keys, so a closed connection leaves with its object.
local conn_timeout = setmetatable({}, { __mode = "k" })

-- Waits for more of the answer on `conn` within the request's limits: returns the data, or
-- nil, message, code.
local function read_more(conn, st)
  local remaining = st.deadline - monotime()
  if remaining <= 0 then return nil, "timeout", "ETIMEDOUT" end
  if remaining < st.read_timeout then
    conn:settimeout(remaining)
    conn_timeout[conn] = remaining
  elseif conn_timeout[conn] ~= st.read_timeout then
    conn:settimeout(st.read_timeout)
    conn_timeout[conn] = st.read_timeout
  end
  return conn:read()
end

-- Sends a reader function's body. Returns true, or nil, message, code; a reader that raises
-- or returns something else than a string or nil gives `false, error` (the caller raises it
-- once the connection is dropped).
local function write_body_reader(conn, reader, chunked)
  while true do
    local called, piece = pcall(reader)
    if not called then return false, piece end
    if piece == nil then break end
    if type(piece) ~= "string" then
      return false, "body reader returned a " .. type(piece) .. " (string or nil expected)"
    end
    if #piece > 0 then
      local ok, err, code
      if chunked then
        ok, err, code = conn:write(format("%x\r\n", #piece), piece, "\r\n")
      else
        ok, err, code = conn:write(piece)
      end
      if not ok then return nil, err, code end
    end
  end
  if chunked then
    local ok, err, code = conn:write("0\r\n\r\n")
    if not ok then return nil, err, code end
  end
  return true
end

local Response = {}
local http_fields = core.http_fields

-- The header tables are made on first use from the raw fields the parser kept (a client that
-- only looks at the status and body never pays for them).
local function build_fields(res)
  local headers, fields = http_fields(rawget(res, "_raw"))
  res.headers, res._fields = headers, fields
  return headers, fields
end

function Response.__index(res, key)
  local method = Response[key]
  if method ~= nil then return method end
  if key == "headers" then
    return (build_fields(res))
  elseif key == "_fields" then
    local _, fields = build_fields(res)
    return fields
  end
  return nil
end

-- Ends the exchange on the response's connection: back to the pool when the answer was read
-- to its end and the connection may carry another request, else closed.
local function release(res, reusable)
  local x = res._x
  if not x then return end
  res._x = nil
  if reusable and x.keep_alive and x.extra == 0 then
    pool_put(x.pool, x.conn)
  else
    pool_drop(x.pool, x.conn)
  end
end

-- The next piece of a streamed body: a string, or nil at the end, or nil, message, code.
local function next_piece(res)
  local x = res._x
  if not x then return nil, res._err, res._code end
  if x.pending then
    local piece = x.pending
    x.pending = nil
    return piece
  end
  if x.done then
    release(res, true)
    return nil
  end
  while true do
    local data, err, code = read_more(x.conn, x)
    local ok, body, done, extra, has_trailers
    if data then
      ok, body, done, extra, has_trailers = x.parser:feed(data)
    elseif code == "EOF" then
      ok, body, done, extra, has_trailers = x.parser:finish()
    else
      res._err, res._code = err, code
      release(res, false)
      return nil, err, code
    end
    if ok == nil then
      res._err, res._code = body, done
      release(res, false)
      return nil, body, done
    end
    if done then
      x.done, x.extra = true, extra
      if has_trailers then res.trailers = x.parser:trailers() end
      if body == "" then
        release(res, true)
        return nil
      end
      return body
    end
    if body ~= "" then return body end
  end
end

--- res:chunks() -> an iterator over the pieces of a streamed body; an error raises.
function Response:chunks()
  return function()
    local piece, err = next_piece(self)
    if piece == nil and err then error(err, 2) end
    return piece
  end
end

--- res:read([n | "a"]) -> up to n bytes of a streamed body (the next piece without n, the
-- rest with "a"); nil at the end; nil, message, code on a failure.
function Response:read(n)
  if self.body ~= nil and not self._x then
    local b = self.body
    self.body = ""
    if n == nil or n == "a" or n >= #b then return b ~= "" and b or (n == "a" and "" or nil) end
    self.body = b:sub(n + 1)
    return b:sub(1, n)
  end
  local buf = self._buf or ""
  self._buf = nil
  if n == "a" then
    local parts = { buf }
    while true do
      local piece, err, code = next_piece(self)
      if not piece then
        if err then return nil, err, code end
        return concat(parts)
      end
      parts[#parts + 1] = piece
    end
  end
  if n ~= nil and (math.type(n) ~= "integer" or n <= 0) then
    error("bad argument #1 to 'read' (positive integer or \"a\" expected)", 2)
  end
  while buf == "" or (n and #buf < n) do
    local piece, err, code = next_piece(self)
    if not piece then
      if err then return nil, err, code end
      break
    end
    buf = buf .. piece
  end
  if buf == "" then return nil end
  if n and #buf > n then
    self._buf = buf:sub(n + 1)
    buf = buf:sub(1, n)
  end
  return buf
end

--- res:close(): ends a streamed response; a body not read to its end drops the connection.
function Response:close()
  self._buf = nil
  if self._x then
    release(self, self._x.done) -- all of it arrived: the connection is clean
    self._err, self._code = "closed", "ECLOSED"
  end
  return true
end
Response.__close = Response.close

--- res:header_values(name) -> the values of each field `name`, in order, not joined.
function Response:header_values(name)
  local lname, out, fields = name:lower(), {}, self._fields
  for i = 1, #fields, 2 do
    if fields[i] == lname then out[#out + 1] = fields[i + 1] end
  end
  return out
end

function Response:__tostring()
  return format("luasrv.HTTPResponse (%d %s)", self.status, self.reason)
end

-- A streamed response also closes when it is collected: its connection then leaves the pool's
-- count of connections in use. (Only streamed ones: a finaliser on every response would cost
-- each collection a walk.)
local StreamResponse = { __index = Response.__index, __close = Response.close,
  __tostring = Response.__tostring, __gc = Response.close }

-- Gets a connection for the request: from the pool, or a new one.
local function get_conn(st, url, fresh)
  local p = pool_for(st.tls == nil and url.pool_key or url.pool_key .. tls_key(st.tls))
  if not fresh then
    local conn = pool_take(p)
    if conn then return conn, p, true end
  end
  local conn, err, code = pool.connect(p, url, st.tls,
    math_min(st.connect_timeout, st.deadline - monotime()))
  if not conn then return nil, err, code end
  return conn, p, false
end

-- Ends an exchange that failed: the connection is closed. A reused connection that the server
-- had closed fails before any byte of an answer: the caller may try once more on a new one.
local function fail(p, conn, reused, err, code, got_bytes)
  pool_drop(p, conn)
  return nil, err, code, reused and not got_bytes and
    (code == "EOF" or code == "ECONNRESET" or code == "EPIPE")
end

-- One exchange on one connection; returns the response, or nil, message, code, retryable
-- (the connection was reused and nothing of an answer arrived).
local function exchange(st, url, fresh)
  local conn, p, reused = get_conn(st, url, fresh)
  if not conn then return nil, p, reused end
  if conn_timeout[conn] ~= st.read_timeout then
    conn:settimeout(st.read_timeout)
    conn_timeout[conn] = st.read_timeout
  end
  local body = st.body
  local body_len, chunked
  if type(body) == "string" then
    body_len = #body
  elseif body ~= nil then
    local cl = nil
    for name, v in pairs(st.headers) do
      if type(name) == "string" and name:lower() == "content-length" then cl = v end
    end
    chunked = cl == nil
  end
  local expect = (body_len and body_len >= st.expect_continue) or
    (body ~= nil and body_len == nil and st.expect_continue == 0)
  local head = build_head(st, url, body_len, chunked, expect)
  local parser = st.parser
  parser:start(st.method == "HEAD", st.max_body)

  local ok, err, code
  if body_len and not expect and body_len <= 65536 then
    ok, err, code = conn:write(head, body)
  else
    ok, err, code = conn:write(head)
  end
  if not ok then return fail(p, conn, reused, err, code) end

  local pending_data -- an answer that came before the body was sent (Expect)
  if expect then
    conn:settimeout(st.continue_wait)
    local data, rerr, rcode = conn:read()
    conn:settimeout(st.read_timeout)
    if data then
      local got, b, done, extra, has_trailers = parser:feed(data)
      if got == nil then return fail(p, conn, reused, b, done, true) end
      if got then
        -- A final answer before the body: the body is not sent and the connection not reused.
        pending_data = { b, done, extra, has_trailers }
        st.no_reuse = true
      end
    elseif rcode ~= "ETIMEDOUT" then
      return fail(p, conn, reused, rerr, rcode, false)
    end
  end
  if not pending_data and body ~= nil and (not body_len or expect or body_len > 65536) then
    if body_len then
      ok, err, code = conn:write(body)
    else
      ok, err, code = write_body_reader(conn, body, chunked)
      if ok == false then
        pool_drop(p, conn)
        error(err, 0)
      end
    end
    if not ok then return fail(p, conn, reused, err, code) end
  end

  -- The head.
  local piece, done, extra, has_trailers
  local got_bytes = false
  if pending_data then
    piece, done, extra, has_trailers = pending_data[1], pending_data[2], pending_data[3],
      pending_data[4]
  else
    while true do
      local got
      local data, rerr, rcode = read_more(conn, st)
      if data then
        got_bytes = true
        got, piece, done, extra, has_trailers = parser:feed(data)
      elseif rcode == "EOF" and got_bytes then
        got, piece, done, extra, has_trailers = parser:finish()
      else
        return fail(p, conn, reused, rerr, rcode, got_bytes)
      end
      if got == nil then return fail(p, conn, reused, piece, done, true) end
      if got then break end
    end
  end
  local status, raw, reason, version, keep_alive = parser:head()
  local res = setmetatable({ status = status, reason = reason, version = version, url = url.text,
    _raw = raw }, Response)
  if done and not st.stream then
    -- The whole answer came with the head (the common small response): no stream state.
    res.body = piece
    if has_trailers then res.trailers = parser:trailers() end
    if keep_alive and not st.no_reuse and extra == 0 then
      pool_put(p, conn)
    else
      pool_drop(p, conn)
    end
    return res
  end
  local x = { conn = conn, pool = p, parser = parser, keep_alive = keep_alive and not st.no_reuse,
    done = done, extra = extra, deadline = st.deadline, read_timeout = st.read_timeout,
    pending = piece ~= "" and piece or nil }
  res._x = x
  if has_trailers then res.trailers = parser:trailers() end
  if st.stream then
    st.parser = nil -- the response keeps it until its body is read
    x.deadline = math_huge -- `timeout` bounds the head; each read of the body has read_timeout
    setmetatable(res, StreamResponse)
    return res
  end
  local parts = {}
  while true do
    local b, rerr, rcode = next_piece(res)
    if not b then
      if rerr then return nil, rerr, rcode end
      break
    end
    parts[#parts + 1] = b
  end
  res.body = concat(parts)
  return res
end

local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

-- A timeout option's value: a number of seconds, math.huge for a negative one.
local function seconds(v, name)
  if type(v) ~= "number" or v ~= v then
    error(format("bad option '%s' (number of seconds expected)", name), 3)
  end
  if v < 0 then return math_huge end
  return v
end

--- srv.http.request(opts) -> response | nil, message, code
function M.request(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'request' (table expected, got " .. type(opts) .. ")", 2)
  end
  local method = opts.method or (opts.body ~= nil and "POST" or "GET")
  if not KNOWN_METHODS[method] then
    if type(method) ~= "string" then error("bad option 'method' (string expected)", 2) end
    method = method:upper()
    check_token(method, "method")
  end
  local headers = opts.headers
  if headers == nil then
    headers = NO_HEADERS
  elseif type(headers) ~= "table" then
    error("bad option 'headers' (table expected)", 2)
  else
    headers = check_headers(headers)
  end
  local body = opts.body
  if body ~= nil and type(body) ~= "string" and type(body) ~= "function" then
    error("bad option 'body' (string or reader function expected, got " .. type(body) .. ")", 2)
  end
  local redirects = opts.redirects
  if redirects == nil then
    redirects = 0
  elseif math.type(redirects) ~= "integer" or redirects < 0 then
    error("bad option 'redirects' (non-negative integer expected)", 2)
  end
  local max_body = opts.max_body
  if max_body == nil then
    max_body = opts.stream and -1 or DEFAULTS.max_body
  elseif math.type(max_body) ~= "integer" then
    error("bad option 'max_body' (integer expected)", 2)
  end
  local timeout, read_timeout, connect_timeout = opts.timeout, opts.read_timeout,
    opts.connect_timeout
  timeout = timeout == nil and DEFAULTS.timeout or seconds(timeout, "timeout")
  read_timeout = read_timeout == nil and DEFAULTS.read_timeout or
    seconds(read_timeout, "read_timeout")
  if read_timeout > timeout then read_timeout = timeout end
  local now = monotime()
  local st = {
    method = method, headers = headers, body = body, tls = opts.tls, stream = opts.stream,
    max_body = max_body, start = now, deadline = now + timeout,
    connect_timeout = connect_timeout == nil and DEFAULTS.connect_timeout or
      seconds(connect_timeout, "connect_timeout"),
    read_timeout = read_timeout,
    expect_continue = opts.expect_continue or DEFAULTS.expect_continue,
    continue_wait = opts.continue_wait == nil and DEFAULTS.continue_wait or
      seconds(opts.continue_wait, "continue_wait"),
  }
  local url, uerr = cached_url(opts.url)
  if not url then return nil, uerr, "EINVAL" end
  local hops = 0
  while true do
    st.parser = pool.take_parser()
    st.no_reuse = false
    local res, err, code, retryable = exchange(st, url, false)
    if not res and retryable and IDEMPOTENT[st.method] and type(st.body) ~= "function" then
      pool.count_retry()
      res, err, code = exchange(st, url, true)
    end
    if st.parser then pool.give_parser(st.parser) end
    if not res then
      if code == "ETIMEDOUT" then err = "timeout" end
      return nil, err, code
    end
    if hops >= redirects or not REDIRECT[res.status] then return res end
    local location = res.headers.location
    if not location or
       (type(st.body) == "function" and res.status ~= 303) then
      return res
    end
    hops = hops + 1
    if st.stream then res:close() end
    local next_url, nerr = parse_url(resolve(url, location))
    if not next_url then return nil, "bad redirect: " .. nerr, "EPROTO" end
    if res.status == 303 and st.method ~= "HEAD" then
      st.method, st.body = "GET", nil
      local h = {}
      for k, v in pairs(st.headers) do
        local lk = type(k) == "string" and k:lower()
        if lk ~= "content-length" and lk ~= "content-type" and lk ~= "transfer-encoding" then
          h[k] = v
        end
      end
      st.headers = h
    end
    if next_url.origin ~= url.origin then
      local h = {}
      for k, v in pairs(st.headers) do
        if not (type(k) == "string" and (k:lower() == "authorization" or k:lower() == "cookie")) then
          h[k] = v
        end
      end
      st.headers = h
    end
    url = next_url
  end
end

local function merge(opts, fields)
  local t = {}
  if opts ~= nil then
    if type(opts) ~= "table" then error("bad options (table expected, got " .. type(opts) .. ")", 3) end
    for k, v in pairs(opts) do t[k] = v end
  end
  for k, v in pairs(fields) do t[k] = v end
  return t
end

-- request() reads its options before it first waits, so one table serves every plain get.
local plain_get = { method = "GET" }

--- srv.http.get(url [, opts]) -> response | nil, message, code
function M.get(url, opts)
  if opts == nil then
    plain_get.url = url
    return M.request(plain_get)
  end
  return M.request(merge(opts, { url = url, method = opts.method or "GET" }))
end

--- srv.http.post(url, body [, opts]) -> response | nil, message, code
function M.post(url, body, opts)
  return M.request(merge(opts, { url = url, body = body, method = "POST" }))
end

return M
