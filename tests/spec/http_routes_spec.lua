-- The core's shortcut for routes: for a path and method found in app.routes, or a route of
-- :param and *splat segments found in app.route_tree, the C core (src/http_route.c) calls the
-- handler itself, with req.params, and a handler declared without parameters gets no request
-- and response objects. Whatever the shortcut takes, the answers must be those of the app's
-- own dispatch: these run in-process (luasrv.test), which goes through the same C dispatch as
-- a socket does.
local srv = require "luasrv"
local t = require "luasrv.test"

describe("routes called by the core", function()
  it("answer from handlers with and without parameters, and variadic ones", function()
    local app = srv.http.app()
    app:get("/none", function() return "none" end)
    app:get("/both", function(req, res)
      res:header("X-Seen", req.method)
      return req.path
    end)
    app:get("/vararg", function(...)
      local req, res = ...
      res:header("X-Kind", type(res))
      return req.path .. " " .. select("#", ...)
    end)
    local r = t.request(app, { path = "/none" })
    assert.equal(200, r.status)
    assert.equal("none", r.body)
    r = t.request(app, { path = "/both" })
    assert.equal("/both", r.body)
    assert.equal("GET", r.headers["x-seen"])
    r = t.request(app, { path = "/vararg" })
    assert.equal("/vararg 2", r.body)
    assert.equal("userdata", r.headers["x-kind"])
  end)

  it("use the percent-decoded path, as the router does", function()
    local app = srv.http.app()
    app:get("/a b", function() return "spaced" end)
    assert.equal("spaced", t.request(app, { path = "/a%20b" }).body)
  end)

  it("leave HEAD, OPTIONS, app:any and 405 to the router", function()
    local app = srv.http.app()
    app:get("/page", function() return "page body" end)
    app:any("/any", function(req) return "any " .. req.method end)
    app:post("/any", function() return "post" end)
    local r = t.request(app, { method = "HEAD", path = "/page" })
    assert.equal(200, r.status)
    assert.equal("", r.body)
    assert.equal("9", r.headers["content-length"])
    r = t.request(app, { method = "OPTIONS", path = "/page" })
    assert.equal(204, r.status)
    assert.equal("GET, HEAD, OPTIONS", r.headers["allow"])
    r = t.request(app, { method = "DELETE", path = "/page" })
    assert.equal(405, r.status)
    assert.equal("any DELETE", t.request(app, { method = "DELETE", path = "/any" }).body)
    assert.equal("post", t.request(app, { method = "POST", path = "/any", body = "" }).body)
  end)

  it("see routes added after the app started serving", function()
    local app = srv.http.app()
    app:get("/", function() return "first" end)
    assert.equal("first", t.request(app, { path = "/" }).body)
    assert.equal(404, t.request(app, { path = "/later" }).status)
    app:get("/later", function() return "later" end)
    app:put("/", function() return "put" end)
    assert.equal("later", t.request(app, { path = "/later" }).body)
    assert.equal("put", t.request(app, { method = "PUT", path = "/", body = "" }).body)
  end)

  it("give way to middleware added at any time", function()
    local app = srv.http.app()
    app:get("/", function() return "handler" end)
    assert.equal("handler", t.request(app, { path = "/" }).body)
    assert.is_table(app.routes)
    local seen = 0
    app:use(function(_, res, next)
      seen = seen + 1
      res:header("X-Middleware", "yes")
      return next()
    end)
    assert.is_nil(app.routes)
    local r = t.request(app, { path = "/" })
    assert.equal("handler", r.body)
    assert.equal("yes", r.headers["x-middleware"])
    assert.equal(1, seen)
    app:get("/new", function() return "new" end)
    r = t.request(app, { path = "/new" })
    assert.equal("new", r.body)
    assert.equal(2, seen)
  end)

  it("give way to a custom 500 page, which then catches their errors", function()
    local app = srv.http.app()
    app:get("/boom", function() error("boom") end)
    local r = t.request(app, { path = "/boom" })
    assert.equal(500, r.status)
    assert.equal("500 Internal Server Error\n", r.body)
    app:error(500, function(_, _, status) return status, "custom 500" end)
    r = t.request(app, { path = "/boom" })
    assert.equal(500, r.status)
    assert.equal("custom 500", r.body)
  end)

  it("keep a 404 page: only found routes are shortcut", function()
    local app = srv.http.app()
    app:get("/", function() return "root" end)
    app:error(404, function() return 404, "custom 404" end)
    assert.is_table(app.routes)
    assert.equal("custom 404", t.request(app, { path = "/missing" }).body)
  end)

  it("let a handler without parameters wait and answer after", function()
    local app = srv.http.app()
    app:get("/slow", function()
      srv.sleep(0.01)
      return 201, { ["X-Waited"] = "1" }, "waited"
    end)
    local r = t.request(app, { path = "/slow" })
    assert.equal(201, r.status)
    assert.equal("waited", r.body)
    assert.equal("1", r.headers["x-waited"])
  end)

  it("turn the table a handler without parameters returns into JSON", function()
    local app = srv.http.app()
    app:get("/json", function() return { ok = true } end)
    local r = t.request(app, { path = "/json" })
    assert.equal("application/json", r.headers["content-type"])
    assert.equal('{"ok":true}', r.body)
  end)

  it("answer 500 when a handler without parameters fails", function()
    local app = srv.http.app()
    app:get("/fail", function() error("no") end)
    app:get("/bad", function() return function() end end)
    assert.equal(500, t.request(app, { path = "/fail" }).status)
    assert.equal(500, t.request(app, { path = "/bad" }).status)
  end)

  it("srv.http.as_handler passes handlers and apps through and refuses the rest at the caller", function()
    local fn = function() end
    local app = srv.http.app()
    assert.equal(fn, srv.http.as_handler(fn))
    assert.equal(app, srv.http.as_handler(app))
    local ok, err = pcall(function() srv.http.as_handler(42) end)
    assert.is_false(ok)
    assert.matches("http_routes_spec%.lua:%d+: bad argument #2 to 'listen' %(handler function or app " ..
                   "expected, got number%)", err)
  end)

  -- An app whose routes make the walk go back: fixed segments before parameters before
  -- splats, at several depths, with HEAD, app:any and a method missing.
  local function tricky_app()
    local app = srv.http.app()
    local function show(name)
      return function(req)
        local keys = {}
        for k in pairs(req.params) do keys[#keys + 1] = k end
        table.sort(keys)
        local out = { name, req.method }
        for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. req.params[k] end
        return table.concat(out, " ")
      end
    end
    app:get("/a/b/c", show("abc"))
    app:get("/a/:x/d", show("axd"))
    app:get("/a/b/:y/e", show("abye"))
    app:get("/a/:x/:z/f", show("axzf"))
    app:get("/a/*rest", show("arest"))
    app:get("/u/:id", show("u"))
    app:post("/u/:id", show("upost"))
    app:any("/any/:what", show("any"))
    app:get("/s/*", show("splat"))
    app:get("/t/:a/", show("trailing"))
    app:get("/:only", show("only"))
    app:get("/m/:p1/:p2/:p3/:p4/:p5/:p6/:p7/:p8/:p9/:p10/:p11/:p12/:p13/:p14/:p15/:p16/:p17",
            show("many"))
    return app
  end

  local CASES = {
    { "GET", "/a/b/c" }, { "GET", "/a/b/d" }, { "GET", "/a/q/d" }, { "GET", "/a/b/w/e" },
    { "GET", "/a/b/w/f" }, { "GET", "/a/q/w/f" }, { "GET", "/a/b/w/g" }, { "GET", "/a/b" },
    { "GET", "/a/" }, { "GET", "/a" }, { "GET", "/u/7" }, { "HEAD", "/u/7" }, { "POST", "/u/7" },
    { "PUT", "/u/7" }, { "OPTIONS", "/u/7" }, { "GET", "/u/" }, { "GET", "/u/7/x" },
    { "DELETE", "/any/thing" }, { "GET", "/s" }, { "GET", "/s/" }, { "GET", "/s/x/y/z" },
    { "GET", "/t/1/" }, { "GET", "/t/1" }, { "GET", "/solo" }, { "GET", "/" },
    { "GET", "/a%2Fb" }, { "GET", "/u/a%20b" }, { "GET", "//" },
    { "GET", "/m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17" },
    { "GET", "/m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16" },
  }

  local function answers(app)
    local out = {}
    for i, case in ipairs(CASES) do
      local r = t.request(app, { method = case[1], path = case[2],
                                 body = case[1] == "POST" and "" or nil })
      out[i] = ("%s %s -> %d %s [%s]"):format(case[1], case[2], r.status, r.body,
                                             r.headers["allow"] or "")
    end
    return out
  end

  it("find parameter routes as the router does, going back where it goes back", function()
    local direct = tricky_app()
    assert.is_table(direct.route_tree)
    local routed = tricky_app()
    routed:use(function(_, _, next) return next() end) -- every request through dispatch
    assert.is_nil(routed.route_tree)
    local got, want = answers(direct), answers(routed)
    assert.same(want, got)
    -- and what they are, so that both going wrong the same way shows too
    assert.equal("GET /a/b/w/e -> 200 abye GET y=w []", got[4])
    assert.equal("GET /a/b/w/f -> 200 axzf GET x=b z=w []", got[5])
    assert.equal("GET /a/b/w/g -> 200 arest GET rest=b/w/g []", got[7])
    assert.equal("HEAD /u/7 -> 200  []", got[12])
    assert.equal("PUT /u/7 -> 405 405 Method Not Allowed\n [GET, HEAD, OPTIONS, POST]", got[14])
    assert.equal("GET /s/ -> 200 splat GET splat= []", got[20])
    assert.equal("GET /u/a%20b -> 200 u GET id=a b []", got[27])
    assert.matches("many GET p1=1 p10=10", got[29], 1, true)
  end)

  it("call a parameter route straight, with req.params, and without dispatch", function()
    local app = srv.http.app()
    app:get("/users/:id", function(req) return req.params.id end)
    local Router = getmetatable(app)
    local call, dispatched = Router.__call, 0
    Router.__call = function(...)
      dispatched = dispatched + 1
      return call(...)
    end
    local ok, err = pcall(function()
      assert.equal("42", t.request(app, { path = "/users/42" }).body)
      assert.equal(0, dispatched)
      assert.equal(404, t.request(app, { path = "/users/42/x" }).status)
      assert.equal(1, dispatched)
      app:use(function(_, _, next) return next() end)
      assert.equal("42", t.request(app, { path = "/users/42" }).body)
      assert.equal(2, dispatched)
    end)
    Router.__call = call
    assert(ok, err)
  end)

  it("keep req.params a field: set by middleware, empty on an exact route, there after the end", function()
    local app = srv.http.app()
    local kept
    app:get("/exact", function(req)
      kept = req
      return tostring(next(req.params))
    end)
    app:get("/p/:v", function(req)
      kept = req
      req.params.extra = "x"
      return req.params.v .. req.params.extra
    end)
    assert.equal("nil", t.request(app, { path = "/exact" }).body)
    assert.equal("1x", t.request(app, { path = "/p/1" }).body)
    assert.equal("1", kept.params.v) -- the request ended; its fields stay readable
    local other = srv.http.app()
    other:use(function(req, _, next)
      req.params = { from = "middleware" }
      return next()
    end)
    other:get("/m", function(req) return req.params.from end)
    assert.equal("middleware", t.request(other, { path = "/m" }).body)
  end)
end)
