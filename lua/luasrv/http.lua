--- srv.http: the HTTP/1.1 server (the protocol core is C, the router Lua).
local core = require "luasrv.core"
local Router = require "luasrv.router"

local type, getmetatable = type, getmetatable

local M = {}

local function as_handler(app, level)
  if type(app) == "function" then return app end
  if getmetatable(app) == Router then return app:handler() end
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
  return core.http_listen(opts, as_handler(app, 2))
end

--- srv.http.app() -> a router (see luasrv.router).
M.app = Router.new

return M
