-- The classic URL-pattern app: a page per route, a login form, and a route with a parameter.
-- Run:  luasrv examples/router.lua [port]          (default 8080)
--       luasrv --reload examples/router.lua        edit a route, save, reload the page
-- Try:  curl http://127.0.0.1:8080/index
--       curl -d 'user=ann&password=x' http://127.0.0.1:8080/login
--       curl http://127.0.0.1:8080/users/42
local srv = require "luasrv"

local app = srv.http.app()

local function page(title, body)
  return ("<!doctype html><title>%s</title><h1>%s</h1>%s"):format(title, title, body or "")
end

app:get("/", function()
  return page("Home", '<p><a href="/index">index</a> · <a href="/login">login</a></p>')
end)

app:get("/index", function()
  return page("Index", "<p>This is the index page.</p>")
end)

app:get("/login", function()
  return page("Login", [[
<form method="post" action="/login">
  <input name="user" placeholder="user"> <input name="password" type="password">
  <button>Log in</button>
</form>]])
end)

app:post("/login", function(req)
  local form = req:form()            -- decoded: "John+Smith" arrives as "John Smith"
  local user = form.user
  if type(user) ~= "string" or user == "" then
    return 400, page("Login failed", "<p>Please give a user name.</p>")
  end
  return page("Welcome", "<p>Hello, " .. user:gsub("[<>&\"]", "") .. "!</p>")
end)

app:get("/users/:id", function(req)
  return { id = req.params.id, name = "user " .. req.params.id }
end)

srv.http.listen({ port = tonumber(arg[1]) or 8080 }, app)
