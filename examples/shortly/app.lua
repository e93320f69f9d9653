-- Shortly: the URL shortener of the Werkzeug tutorial, with its state in Redis, so that any
-- number of workers (and hosts) share it.
-- Run:  luasrv examples/shortly/app.lua [port]                 (default 5000)
--       luasrv --workers 2 examples/shortly/app.lua            every worker sees the same links
--       REDIS_URL=redis://:password@host:6379/2 luasrv examples/shortly/app.lua
--       SHORTLY_POOL=1 luasrv examples/shortly/app.lua   a pooled connection per request
-- Try:  open http://127.0.0.1:5000/ and submit a URL
--       curl -i -d url=https://www.lua.org/ http://127.0.0.1:5000/    (303 to /1+)
--       curl -i http://127.0.0.1:5000/1                                (302 to the target)
--       curl http://127.0.0.1:5000/1+                                  (the target, 1 click)
-- Keys (as in the tutorial): shortly:last-url-id (the counter), shortly:url-target:<id>,
-- shortly:reverse-url:<url> (a URL submitted twice keeps its id), shortly:click-count:<id>.
local srv = require "luasrv"
local redis = require "luasrv.redis"

local REDIS_URL = os.getenv("REDIS_URL") or "redis://127.0.0.1:6379/0"
local redis_opts = assert(redis.parse_url(REDIS_URL))
redis_opts.timeout = 5
-- The requests of a worker share one connection and their commands go out together
-- (multiplex); SHORTLY_POOL=1 gives each request a connection of its own from the pool.
redis_opts.multiplex = os.getenv("SHORTLY_POOL") ~= "1"

local MAX_URL = 2048

local app = srv.http.app()

-- HTML escaping for text and attribute values.
local escapes = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
local function escape(s)
  return (tostring(s):gsub("[&<>\"']", escapes))
end

local function page(title, body)
  return ([[<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%s | Shortly</title>
<style>
body { font: 16px/1.5 sans-serif; max-width: 40em; margin: 3em auto; color: #222; }
h1 a { color: #c33; text-decoration: none; } .error { color: #c33; }
input[type=url] { width: 28em; padding: .3em; } dt { font-weight: bold; }
</style></head>
<body><h1><a href="/">shortly</a></h1>
<h2>%s</h2>
%s
</body></html>
]]):format(escape(title), escape(title), body)
end

local function form_page(error_text, url)
  local err = error_text and ('<p class="error">' .. escape(error_text) .. "</p>") or ""
  return page("Submit URL", err .. [[
<form action="/" method="post">
  <p>Enter a URL to shorten:</p>
  <input type="url" name="url" value="]] .. escape(url or "") .. [[" autofocus>
  <input type="submit" value="Shorten">
</form>]])
end

local function not_found_page()
  return page("Not Found", "<p>Nothing is shortened under this address.</p>")
end

local function unavailable(err)
  srv.log.error("shortly: redis:", err)
  return 503, page("Unavailable", "<p>The link store cannot be reached; try again soon.</p>")
end

-- After fn(r): the client is released (back to the pool, unless it is multiplexed), or closed
-- if fn failed; fn's results pass through.
local function finish(r, ok, ...)
  if not ok then
    r:close()
    error((...), 0)
  end
  r:release()
  return ...
end

-- A multiplexed client is made once (no I/O until its first command) and serves every request.
local shared_client = redis_opts.multiplex and assert(redis.connect(redis_opts))

-- Runs fn(r, ...) with a Redis client and returns fn's results; 503 if Redis cannot be
-- reached. (The request's values go to fn as arguments: no closure is made per request.)
local function with_redis(fn, ...)
  if shared_client then return fn(shared_client, ...) end
  local r, err = redis.connect(redis_opts)
  if not r then return unavailable(err) end
  return finish(r, pcall(fn, r, ...))
end

-- http and https URLs with a host, without spaces or control characters.
local function valid_url(url)
  return type(url) == "string" and #url <= MAX_URL and
    url:lower():match("^https?://[^/?#@%s]+") ~= nil and not url:find("[%c%s]")
end

local DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
local function base36(n)
  local out = {}
  repeat
    local d = n % 36
    table.insert(out, 1, DIGITS:sub(d + 1, d + 1))
    n = n // 36
  until n == 0
  return table.concat(out)
end

-- The id of `url`, made the first time it is submitted.
local function insert_url(r, url)
  local id, err = r:get("shortly:reverse-url:" .. url)
  if err then return nil, err end
  if id then return id end
  local n
  n, err = r:incr("shortly:last-url-id")
  if not n then return nil, err end
  id = base36(n)
  local ok
  ok, err = r:set("shortly:url-target:" .. id, url)
  if not ok then return nil, err end
  -- A second submission of the same URL at the same moment may have won: keep its id.
  ok, err = r:set("shortly:reverse-url:" .. url, id, "NX")
  if err then return nil, err end
  if not ok then return r:get("shortly:reverse-url:" .. url) end
  return id
end

-- The tutorial's views, each with the Redis client first.

-- on_new_url: the short link of a valid URL, then its details page.
local function new_url(r, res, url)
  local id, err = insert_url(r, url)
  if not id then return unavailable(err) end
  res:redirect("/" .. id .. "+", 303)
end

-- on_follow_short_link: the target's GET and the click's INCR go in one round trip.
local function queue_follow(p, target_key, clicks_key)
  p:get(target_key)
  p:incr(clicks_key)
end

local function follow_short_link(r, res, id)
  local clicks_key = "shortly:click-count:" .. id
  local replies, err = r:pipeline(queue_follow, "shortly:url-target:" .. id, clicks_key)
  if not replies then return unavailable(err) end
  local target = replies[1]
  if redis.is_error(target) then return unavailable(redis.is_error(target)) end
  if target == redis.null then
    r:del(clicks_key) -- the INCR counted a click on an id that does not exist
    return 404, not_found_page()
  end
  return res:redirect(target, 302)
end

-- on_short_link_details: the target and the click count.
local function short_link_details(r, req, id)
  local found, err = r:mget("shortly:url-target:" .. id, "shortly:click-count:" .. id)
  if not found then return unavailable(err) end
  local target, clicks = found[1], found[2]
  if target == redis.null then return 404, not_found_page() end
  if clicks == redis.null then clicks = "0" end
  local short = "http://" .. (req.headers.host or "localhost") .. "/" .. id
  return page("Details", ([[
<dl>
  <dt>Full link</dt><dd><a href="%s" id="target">%s</a></dd>
  <dt>Short link</dt><dd><a href="%s" id="short">%s</a></dd>
  <dt>Clicks</dt><dd id="clicks">%s</dd>
</dl>]]):format(escape(target), escape(target), escape(short), escape(short), escape(clicks)))
end

app:get("/", function()
  return form_page()
end)

app:post("/", function(req, res)
  local url = req:form().url
  if type(url) == "string" then url = url:match("^%s*(.-)%s*$") end
  if not valid_url(url) then
    return 400, form_page("Please enter a valid http:// or https:// URL.", type(url) == "string" and url or "")
  end
  return with_redis(new_url, res, url)
end)

-- /<id> redirects and counts a click; /<id>+ shows the details.
app:get("/:id", function(req, res)
  local id, details = req.params.id:match("^([0-9a-z]+)(%+?)$")
  if not id then return 404, not_found_page() end
  if details == "" then return with_redis(follow_short_link, res, id) end
  return with_redis(short_link_details, req, id)
end)

app:error(404, function(_, _, status)
  return status, not_found_page()
end)

srv.http.listen({ host = os.getenv("HOST") or "127.0.0.1", port = tonumber(arg[1]) or 5000 }, app)
