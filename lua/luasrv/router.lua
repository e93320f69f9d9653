--- The URL router behind srv.http.app(): methods, `:param` and `*splat` segments, 404 and
-- 405 with Allow, automatic HEAD and OPTIONS, middleware, mounted sub-apps and custom error
-- handlers. Routes live in a segment trie, so finding one costs the same however many there
-- are; fixed paths are also kept in a table for a single lookup.
--
-- app.routes (path -> {METHOD = handler}) and app.route_tree (the trie's root) are what the
-- HTTP core may use on its own (src/http_route.c): for a request whose route it finds there,
-- walking the trie as `match` does, the core calls the handler straight, with req.params set,
-- as dispatch would. They are there only while dispatch would do nothing else for such a
-- request: middleware or a custom 500 page take them away.
local log = require("luasrv.core").log

local concat, sort, type, error, select = table.concat, table.sort, type, error, select
local pack, unpack, traceback = table.pack, table.unpack, debug.traceback
local sub, find, byte = string.sub, string.find, string.byte

local Router = {}
Router.__index = Router

local METHODS = { "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS" }

local function new_node()
  return { children = {}, handlers = nil }
end

--- srv.http.app() -> a new app.
function Router.new()
  return setmetatable({
    root = new_node(),
    exact = {},        -- path -> node, for routes without parameters
    routes = {},       -- path -> node.handlers, for the core (see above); nil once unsafe
    middleware = {},
    mounts = {},
    statics = {},      -- app:static mounts, longest prefix first
    errors = {},
  }, Router)
end

-- The segments of a route pattern (matching a request's path finds them in place instead).
local function split(path)
  local segs, n, pos = {}, 0, 2
  local len = #path
  while pos <= len + 1 do
    local slash = find(path, "/", pos, true)
    local seg = sub(path, pos, (slash or len + 1) - 1)
    n = n + 1
    segs[n] = seg
    if not slash then break end
    pos = slash + 1
  end
  return segs, n
end

local function check_pattern(pattern, level)
  if type(pattern) ~= "string" or byte(pattern, 1) ~= 47 then -- "/"
    error("route pattern must be a string starting with '/'", level + 1)
  end
end

--- app:route(method, pattern, handler): handler(req, res) for method ("GET", ... or "*" for
-- any) on pattern ("/users/:id", "/files/*path").
function Router:route(method, pattern, handler)
  check_pattern(pattern, 2)
  if type(handler) ~= "function" then
    error("bad argument #3 to 'route' (function expected, got " .. type(handler) .. ")", 2)
  end
  method = method:upper()
  local node, dynamic = self.root, false
  if pattern ~= "/" then
    local segs, n = split(pattern)
    for i = 1, n do
      local seg = segs[i]
      local first = byte(seg, 1)
      if first == 58 then -- ":"
        dynamic = true
        local name = sub(seg, 2)
        if name == "" then error("route parameter needs a name: " .. pattern, 2) end
        local p = node.param
        if p and p.name ~= name then
          error(("route %s: parameter ':%s' conflicts with ':%s' at the same place")
            :format(pattern, name, p.name), 2)
        end
        node.param = p or { name = name, node = new_node() }
        node = node.param.node
      elseif first == 42 then -- "*"
        dynamic = true
        if i ~= n then error("'*' must be the last segment of a route: " .. pattern, 2) end
        local name = sub(seg, 2)
        node.splat = node.splat or { name = name ~= "" and name or "splat", node = new_node() }
        node = node.splat.node
      else
        local child = node.children[seg]
        if not child then
          child = new_node()
          node.children[seg] = child
        end
        node = child
      end
    end
  end
  node.handlers = node.handlers or {}
  if node.handlers[method] then
    error(("route %s %s is defined twice"):format(method, pattern), 2)
  end
  node.handlers[method] = handler
  if dynamic then
    self.dynamic = true
    if self.routes then self.route_tree = self.root end
  else
    self.exact[pattern] = node
    if self.routes then self.routes[pattern] = node.handlers end
  end
  return self
end

for _, m in ipairs(METHODS) do
  Router[m:lower()] = function(self, pattern, handler)
    return self:route(m, pattern, handler)
  end
end

--- app:websocket(pattern, handler [, opts]): handler(ws, req) for WebSocket connections
-- opened on pattern (see luasrv.ws).
function Router:websocket(pattern, handler, opts)
  if type(handler) ~= "function" then
    error("bad argument #2 to 'websocket' (function expected, got " .. type(handler) .. ")", 2)
  end
  local ws = require "luasrv.ws"
  return self:route("GET", pattern, ws.route_handler(handler, ws.check_options(opts, 2)))
end

--- app:any(pattern, handler): the handler for every method.
function Router:any(pattern, handler)
  return self:route("*", pattern, handler)
end

--- app:use(fn): middleware fn(req, res, next), run in order before the route's handler. It
-- calls next() to go on (and gets the handler's return values back), or returns a response
-- of its own to stop there.
function Router:use(fn)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'use' (function expected, got " .. type(fn) .. ")", 2)
  end
  self.middleware[#self.middleware + 1] = fn
  self.routes, self.route_tree = nil, nil -- every request passes the middleware now
  return self
end

--- app:mount(prefix, subapp): requests under prefix go to subapp, which sees the path without
-- the prefix (req.path) and the prefix in req.mount.
function Router:mount(prefix, subapp)
  check_pattern(prefix, 2)
  if getmetatable(subapp) ~= Router then
    error("bad argument #2 to 'mount' (app expected)", 2)
  end
  prefix = prefix:gsub("/+$", "")
  self.mounts[#self.mounts + 1] = { prefix = prefix, app = subapp }
  sort(self.mounts, function(a, b) return #a.prefix > #b.prefix end)
  return self
end

--- app:static(prefix, dir [, opts]): serves the files below dir under prefix (see
-- luasrv.static for opts). Consulted after the routes and mounted apps: a route always wins.
function Router:static(prefix, dir, opts)
  check_pattern(prefix, 2)
  local server = require("luasrv.static").new(dir, opts, 2)
  prefix = prefix:gsub("/+$", "")
  local statics = self.statics
  statics[#statics + 1] = { prefix = prefix, slash = prefix .. "/", server = server,
                            order = #statics }
  sort(statics, function(a, b)
    if #a.prefix ~= #b.prefix then return #a.prefix > #b.prefix end
    return a.order < b.order
  end)
  return self
end

--- app:error(status, fn): fn(req, res, status, message) answers instead of the plain page for
-- 404, 405 or 500 (a failing handler).
function Router:error(status, fn)
  if type(status) ~= "number" or type(fn) ~= "function" then
    error("usage: app:error(status, function(req, res, status, message) ... end)", 2)
  end
  self.errors[status] = fn
  if status == 500 then self.routes, self.route_tree = nil, nil end -- under its xpcall now
  return self
end

-- What match captured: parameter names and values in turns, from index 1. A scratch list
-- reused by every request (matching never yields), so a failed branch costs no table.
local caps = {}

-- Matches the segments of path from position pos (nil: no segment left) below node: a fixed
-- segment first, then a parameter, then a splat. Returns the node and how many entries of
-- caps the match filled, or nil. Segments are found in place, with no list of them.
local function match(node, path, pos, k)
  if not pos then
    if node.handlers then return node, k end
    local splat = node.splat
    if splat then
      caps[k + 1], caps[k + 2] = splat.name, ""
      return splat.node, k + 2
    end
    return nil
  end
  local slash = find(path, "/", pos, true)
  local seg = sub(path, pos, (slash or 0) - 1)
  local next_pos = slash and slash + 1
  local child = node.children[seg]
  if child then
    local found, n = match(child, path, next_pos, k)
    if found then return found, n end
  end
  local param = node.param
  if param and seg ~= "" then
    caps[k + 1], caps[k + 2] = param.name, seg
    local found, n = match(param.node, path, next_pos, k + 2)
    if found then return found, n end
  end
  local splat = node.splat
  if splat then
    caps[k + 1], caps[k + 2] = splat.name, sub(path, pos)
    return splat.node, k + 2
  end
  return nil
end

local function lookup(self, path)
  local node = self.exact[path]
  if node then return node, nil end
  -- Without :param or *splat routes the exact table holds them all (static files skip this).
  if not self.dynamic then return nil end
  if byte(path, 1) ~= 47 then return nil end
  local found, n = match(self.root, path, 2, 0)
  if not found or n == 0 then return found, nil end
  local params = {}
  for i = 1, n, 2 do params[caps[i]] = caps[i + 1] end
  return found, params
end

local function allowed(handlers)
  local list = {}
  if handlers["*"] then return "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" end
  for m in pairs(handlers) do list[#list + 1] = m end
  if handlers.GET and not handlers.HEAD then list[#list + 1] = "HEAD" end
  if not handlers.OPTIONS then list[#list + 1] = "OPTIONS" end
  sort(list)
  return concat(list, ", ")
end

local PLAIN = "text/plain; charset=utf-8"

local function fail(self, req, res, status, message)
  local custom = self.errors[status]
  if custom then return custom(req, res, status, message) end
  return status, { ["Content-Type"] = PLAIN }, message .. "\n"
end

local function run_chain(mw, i, handler, req, res)
  local fn = mw[i]
  if not fn then return handler(req, res) end
  return fn(req, res, function() return run_chain(mw, i + 1, handler, req, res) end)
end

local run -- below

-- The handler of a static mount (made on first use): the files, then the app's 404.
local function static_handler(app, st)
  local server, plen = st.server, #st.prefix
  st.handler = function(req, res)
    local path = req.path
    if server:serve(req, res, plen == 0 and path or sub(path, plen + 1)) then return end
    return fail(app, req, res, 404, "404 Not Found")
  end
  return st.handler
end

--- Finds and runs the handler for a request; the result is the handler's return values.
function Router:dispatch(req, res)
  local path = req.path
  if path == "*" and req.method == "OPTIONS" then
    -- OPTIONS * asks about the server as a whole (RFC 9110 §9.3.7).
    return 204, { Allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" }, ""
  end
  local node, params = lookup(self, path)
  local handlers = node and node.handlers
  if not handlers then
    for _, m in ipairs(self.mounts) do
      local p = m.prefix
      if path == p or sub(path, 1, #p + 1) == p .. "/" then
        req.mount = (req.mount or "") .. p
        req.path = path == p and "/" or sub(path, #p + 1)
        return m.app:dispatch(req, res)
      end
    end
    -- Static files: the longest matching mount answers, through the middleware as a route
    -- does; what it does not find is the app's 404.
    local statics, handler = self.statics, nil
    for i = 1, #statics do
      local st = statics[i]
      local p = st.prefix
      if p == "" or path == p or sub(path, 1, #p + 1) == st.slash then
        handler = st.handler or static_handler(self, st)
        break
      end
    end
    if not handler then return fail(self, req, res, 404, "404 Not Found") end
    return run(self, handler, req, res)
  end
  local method = req.method
  local handler = handlers[method] or handlers["*"]
  if not handler then
    if method == "HEAD" then
      handler = handlers.GET
    elseif method == "OPTIONS" then
      return 204, { Allow = allowed(handlers) }, ""
    end
    if not handler then
      res:header("Allow", allowed(handlers))
      return fail(self, req, res, 405, "405 Method Not Allowed")
    end
  end
  if params then req.params = params end
  return run(self, handler, req, res)
end

-- Runs a handler through the app's middleware and its custom 500 page, if it has them.
function run(self, handler, req, res)
  local mw = self.middleware
  if mw[1] == nil and not self.errors[500] then
    return handler(req, res)
  end
  if not self.errors[500] then
    return run_chain(mw, 1, handler, req, res)
  end
  local result = pack(xpcall(run_chain, traceback, mw, 1, handler, req, res))
  if result[1] then return select(2, unpack(result, 1, result.n)) end
  local err = result[2]
  -- A request the handler rejected on purpose (a form over a limit: 413) is no failure.
  if type(err) == "table" and err.http_status then error(err, 0) end
  -- Once the response is on its way a custom page cannot replace it: let the server cut the
  -- connection, so a partly sent body is not taken for a complete one.
  if res:sent() then error(err, 0) end
  log("error", ("%s %s: handler failed: %s"):format(req.method, req.target, tostring(result[2])))
  return fail(self, req, res, 500, "500 Internal Server Error")
end

--- app:handler() -> function(req, res): the app as a plain handler for srv.http.listen.
function Router:handler()
  return function(req, res) return self:dispatch(req, res) end
end

Router.__call = Router.dispatch

return Router
