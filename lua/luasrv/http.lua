--- srv.http: the HTTP/1.1 server (the protocol core is C, the router Lua).
local core = require "luasrv.core"

local type, getmetatable = type, getmetatable

local M = {}

-- An app is given as it is (it is callable): the core then finds its exact routes itself
-- (app.routes, see luasrv.router) and calls their handlers without a dispatch in Lua.
-- srv.http.as_handler(app_or_fn [, level]): the handler listen() serves, or an error at the
-- caller's `level` (default 1: whoever called as_handler).
local function as_handler(app, level)
  level = level or 1
  if type(app) == "function" then return app end
  local mt = getmetatable(app)
  if mt and mt.__call then return app end
  error("bad argument #2 to 'listen' (handler function or app expected, got " .. type(app) .. ")",
    level + 1)
end
M.as_handler = as_handler

--- srv.http.listen(opts, app_or_handler) -> listener. Prints "listening on http://HOST:PORT".
-- opts: host, port, backlog, max_line, max_header_size, max_headers, max_body,
-- header_timeout, keepalive_timeout, write_timeout.
function M.listen(opts, app)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'listen' (table expected, got " .. type(opts) .. ")", 2)
  end
  local ok, listener = pcall(core.http_listen, opts, as_handler(app, 2))
  if not ok then
    -- Under pcall the C error carries no position: report it at the caller's line.
    error(listener, 2)
  end
  return listener
end

--- srv.http.app() -> a router (see luasrv.router).
M.app = require("luasrv.router").new

-- Request and response methods written in Lua. The modules behind them load on first use.
local req_methods, res_methods = core.http_request_methods, core.http_response_methods

--- req:form([opts]) -> the urlencoded or multipart form (see luasrv.form).
function req_methods.form(req, opts)
  return require("luasrv.form").parse(req, opts)
end

--- res:cookie(name, value [, opts]) -> res: a Set-Cookie header (see luasrv.cookie).
function res_methods.cookie(res, name, value, opts)
  return require("luasrv.cookie").set(res, name, value, opts)
end

--- res:sse() -> an event stream (see luasrv.sse).
function res_methods.sse(res)
  return require("luasrv.sse").open(res)
end

--- res:sendfile(file [, offset [, length]]) -> res | nil, message, code: the C method, with
-- the Content-Type taken from a path's extension when no header set one.
local c_sendfile = res_methods.sendfile
function res_methods.sendfile(res, file, offset, length, ctype)
  if ctype == nil and type(file) == "string" then
    ctype = require("luasrv.mime").content_type(file)
  end
  return c_sendfile(res, file, offset, length, ctype)
end

-- The outbound client: srv.http.request, get, post, pool_stats, pool_close, pool_configure;
-- and srv.http.proxy, which relays a request through the same pool.
do
  local client = require "luasrv.http_client"
  M.request, M.get, M.post = client.request, client.get, client.post
  M.pool_stats, M.pool_close, M.pool_configure = client.pool_stats, client.pool_close,
    client.pool_configure
  M.proxy = require("luasrv.http_proxy").proxy
end

return M
