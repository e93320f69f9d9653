-- A small in-memory REST resource: GET/POST/PUT/DELETE on /todos, JSON in and out, and
-- validation errors answered as 400 with a JSON body.
-- Run:  luasrv examples/json_api.lua [port]        (default 8080)
-- Try:  curl -d '{"title":"write docs"}' http://127.0.0.1:8080/todos
--       curl http://127.0.0.1:8080/todos
--       curl -X PUT -d '{"title":"ship","done":true}' http://127.0.0.1:8080/todos/1
--       curl -X DELETE http://127.0.0.1:8080/todos/1
local srv = require "luasrv"

local app = srv.http.app()
local todos, next_id = {}, 1

local function invalid(message)
  return 400, { error = message }
end

-- Reads and checks a todo from the request body: a title (non-empty string), done (boolean).
local function read_todo(req)
  local data, err = req:json()
  if type(data) ~= "table" then
    return nil, "body must be a JSON object" .. (err and (": " .. err) or "")
  end
  if type(data.title) ~= "string" or data.title == "" then
    return nil, "title must be a non-empty string"
  end
  if data.done ~= nil and type(data.done) ~= "boolean" then
    return nil, "done must be true or false"
  end
  return { title = data.title, done = data.done == true }
end

local function find(req)
  local id = tonumber(req.params.id)
  return id and todos[id], id
end

app:get("/todos", function()
  local list = setmetatable({}, srv.json.array_mt) -- sent as [] when there are none
  for id = 1, next_id - 1 do
    if todos[id] then list[#list + 1] = todos[id] end
  end
  return { todos = list, count = #list }
end)

app:post("/todos", function(req)
  local todo, err = read_todo(req)
  if not todo then return invalid(err) end
  todo.id = next_id
  todos[next_id], next_id = todo, next_id + 1
  return 201, { Location = "/todos/" .. todo.id }, todo
end)

app:get("/todos/:id", function(req)
  local todo = find(req)
  if not todo then return 404, { error = "no such todo" } end
  return todo
end)

app:put("/todos/:id", function(req)
  local todo, id = find(req)
  if not todo then return 404, { error = "no such todo" } end
  local new, err = read_todo(req)
  if not new then return invalid(err) end
  new.id = id
  todos[id] = new
  return new
end)

app:delete("/todos/:id", function(req)
  local todo, id = find(req)
  if not todo then return 404, { error = "no such todo" } end
  todos[id] = nil
  return 204, ""
end)

srv.http.listen({ port = tonumber(arg[1]) or 8080 }, app)
