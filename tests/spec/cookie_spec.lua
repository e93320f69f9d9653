-- Cookies: req.cookies and res:cookie(name, value, opts) over real sockets
-- (tests/fixtures/form_app.lua), and the checks of luasrv.cookie.
local srv = require "luasrv"
local cjson = require "cjson"
local H = require "http_helper"
local cookie = require "luasrv.cookie"

describe("cookies", function()
  local server, port, dir

  setup(function()
    dir = H.helper.tmpname("-cookies")
    os.execute("mkdir -p " .. H.helper.shell_quote(dir))
    server = H.start("form_app.lua", { args = { dir, dir } })
    port = server.port
  end)

  teardown(function()
    if server then server:cleanup() end
    os.execute("rm -rf " .. H.helper.shell_quote(dir))
  end)

  after_each(function()
    if server.status == nil then
      assert.is_true(server:alive(), "the server died:\n" .. server:stderr())
    end
  end)

  local function set_cookie_fields(r)
    local list = {}
    for _, f in ipairs(r.fields) do
      if f[1]:lower() == "set-cookie" then list[#list + 1] = f[2] end
    end
    return list
  end

  it("are read from the Cookie header into req.cookies", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/cookies", 'Cookie: a=1; b="quoted"; c=x=y\r\nCookie: d=4\r\n'))
      assert.equal(200, r.status)
      assert.same({ a = "1", b = "quoted", c = "x=y", d = "4" }, cjson.decode(r.body))
    end)
  end)

  it("are set with every attribute, one Set-Cookie field each", function()
    srv.run(function()
      local r = H.exchange(port, H.get("/set-cookies"))
      assert.equal(200, r.status)
      assert.same({
        "plain=v1",
        "full=v2; Path=/; Domain=example.com; Max-Age=3600; Expires=Tue, 14 Nov 2023 22:13:20 GMT; " ..
          "Secure; HttpOnly; SameSite=Strict",
        "gone=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "__Host-id=abc; Path=/; Secure",
      }, set_cookie_fields(r))
    end)
  end)

  it("refuse bad input with an error (a 500, never a broken header)", function()
    srv.run(function()
      local function try(name, value, opts)
        local q = ("/cookie?name=%s&value=%s"):format(name, value)
        if opts then q = q .. "&opts=" .. cjson.encode(opts):gsub("[^%w]", function(c)
          return ("%%%02X"):format(c:byte())
        end) end
        return H.exchange(port, H.get(q))
      end
      assert.equal(200, try("ok", "fine").status)
      assert.same({ "ok=fine" }, set_cookie_fields(try("ok", "fine")))
      for _, case in ipairs({
        { "bad%20name", "v" }, { "a", "semi%3Bcolon" }, { "a", "sp%20ace" }, { "a", "comma%2C" },
        { "a", "v", { path = "/x;y" } }, { "a", "v", { same_site = "sometimes" } },
        { "a", "v", { same_site = "None" } }, { "__Secure-x", "v" },
        { "__Host-x", "v", { secure = true, path = "/", domain = "example.com" } },
        { "a", "v", { max_age = 1.5 } }, { "a", "v", { httponly = true } },
        { "a", "v", { domain = "exa mple.com" } },
      }) do
        local r = try(case[1], case[2], case[3])
        assert.equal(500, r.status, case[1] .. " " .. case[2])
        assert.is_nil(r.headers["set-cookie"])
      end
    end)
  end)

  describe("luasrv.cookie", function()
    it("formats values and options", function()
      assert.equal("a=b", cookie.format("a", "b"))
      assert.equal("n=42", cookie.format("n", 42))
      assert.equal('q="quoted"', cookie.format("q", '"quoted"'))
      assert.equal("s=1; Secure; SameSite=None", cookie.format("s", "1", { same_site = "none", secure = true }))
      assert.equal("p=1; Secure; Partitioned", cookie.format("p", "1", { secure = true, partitioned = true }))
      assert.equal("e=1; Expires=Sun, 06 Nov 1994 08:49:37 GMT",
        cookie.format("e", "1", { expires = "Sun, 06 Nov 1994 08:49:37 GMT" }))
    end)

    it("raises with a message naming the problem", function()
      local function err(...)
        local ok, msg = pcall(cookie.format, ...)
        assert.is_false(ok)
        return msg
      end
      assert.matches("invalid name", err("a b", "v"))
      assert.matches("invalid value for 'a'", err("a", "x;y"))
      assert.matches("unknown option 'httponly'", err("a", "v", { httponly = true }))
      assert.matches("needs secure = true", err("a", "v", { same_site = "None" }))
      assert.matches("__Host%- prefix", err("__Host-a", "v", { secure = true }))
      assert.matches("larger than 4096 bytes", err("a", ("v"):rep(5000)))
      assert.matches("must be a string", err("a", {}))
    end)

    it("is used by res:cookie in-process too", function()
      local t = require "luasrv.test"
      local app = srv.http.app()
      app:get("/", function(_, res) return res:cookie("sid", "x1", { http_only = true }):send("ok") end)
      local r = t.request(app, { path = "/" })
      assert.equal("sid=x1; HttpOnly", r.headers["set-cookie"])
    end)
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)
