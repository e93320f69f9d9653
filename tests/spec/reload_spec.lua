-- Hot reload (DESIGN §3): the real binary runs an app copied from tests/fixtures/reload_*.lua
-- into a temporary project directory, as `luasrv --reload app.lua PORT...` (or without
-- --reload, reloading on SIGHUP), and the spec rewrites the files to make it reload. Ports are
-- fixed for the server's whole life (a reload keeps a listener by kind and address), so they
-- are picked free beforehand and given as arguments.
local srv = require "luasrv"
local helper = require "helper"
local H = require "http_helper"

local quote = helper.shell_quote
local sanitized = os.getenv("LUASRV_SANITIZED") ~= nil

-- How long a save may take to show (the brief: within 1 s).
local RELOAD_WITHIN = 1.0

-- ---- waiting -------------------------------------------------------------------------------

--- Polls cond() (inside srv.run) every few milliseconds; true once it holds, false after
-- `timeout` seconds.
local function wait_for(cond, timeout)
  local deadline = srv.monotime() + timeout
  while not cond() do
    if srv.monotime() > deadline then return false end
    srv.sleep(0.003)
  end
  return true
end

--- Starts fn as a task of its own; the record's done/ok/err fill in when it ends.
local function spawn(fn)
  local rec = { done = false }
  srv.after(0, function()
    local ok, err = xpcall(fn, debug.traceback)
    rec.ok, rec.err, rec.done = ok, err, true
  end)
  return rec
end

local function join(recs, timeout)
  assert(wait_for(function()
    for _, r in ipairs(recs) do
      if not r.done then return false end
    end
    return true
  end, timeout or 10), "spawned tasks did not finish")
  for _, r in ipairs(recs) do
    if not r.ok then error(r.err, 0) end
  end
end

local count = helper.count

local function line_count(text)
  return select(2, text:gsub("\n", "\n"))
end

-- ---- free ports ----------------------------------------------------------------------------

local free_tcp_ports = helper.free_tcp_ports

local function free_udp_port()
  return srv.run(function()
    local sock = srv.udp.socket({ host = "127.0.0.1", port = 0 })
    local _, port = sock:address()
    sock:close()
    return port
  end)
end

-- ---- a project directory -------------------------------------------------------------------

local Project = {}
Project.__index = Project

--- A temporary directory holding files copied from fixtures: files maps a name in the project
-- (e.g. "app.lua", "lib/util.lua") to a fixture name.
local function project(files)
  local dir = helper.tmpname("-reload")
  assert(os.execute("mkdir -p " .. quote(dir)))
  local p = setmetatable({ dir = dir, templates = {} }, Project)
  for name, fixture in pairs(files) do
    local text = assert(helper.read_file(helper.path("tests/fixtures/" .. fixture)))
    p.templates[name] = text
    p:write(name, text)
  end
  return p
end

function Project:path(name)
  return self.dir .. "/" .. name
end

--- Saves a file: rewritten in place, or with atomic set written beside it and renamed over it
-- (as many editors do).
function Project:write(name, text, atomic)
  local path = self:path(name)
  local sub = name:match("^(.*)/[^/]*$")
  if sub then assert(os.execute("mkdir -p " .. quote(self:path(sub)))) end
  if atomic then
    local tmp = path .. ".saving"
    helper.write_file(tmp, text)
    assert(os.rename(tmp, path))
  else
    helper.write_file(path, text)
  end
end

--- The file's fixture text with its `local VERSION = "v1"` line set to `version`, its other
-- replacements (a table of plain from -> to) made, and `extra` appended.
function Project:text(name, version, extra, replace)
  local text = self.templates[name]
  local function sub(from, to)
    local i, j = text:find(from, 1, true)
    assert(i, ("%s has no %q"):format(name, from))
    text = text:sub(1, i - 1) .. to .. text:sub(j + 1)
  end
  if version then sub('local VERSION = "v1"', ('local VERSION = "%s"'):format(version)) end
  for from, to in pairs(replace or {}) do sub(from, to) end
  return text .. (extra or "")
end

function Project:remove()
  os.execute("rm -rf " .. quote(self.dir))
end

-- ---- the server running in it ---------------------------------------------------------------

local Server = {}
Server.__index = Server

--- Starts `luasrv [flags] app.lua [args]` with the project as its working directory (so that
-- require finds the project's modules) and waits for `listeners` "listening on" lines.
function Project:start(opts)
  local out, err = helper.tmpname(".out"), helper.tmpname(".err")
  local words = { quote(helper.bin) }
  for _, f in ipairs(opts.flags or {}) do words[#words + 1] = quote(f) end
  words[#words + 1] = "app.lua"
  for _, a in ipairs(opts.args or {}) do words[#words + 1] = quote(tostring(a)) end
  local env = ""
  if sanitized then
    env = "LD_PRELOAD= ASAN_OPTIONS=detect_leaks=1:abort_on_error=1" .. (opts.asan or "") .. " "
  end
  local cmd = ("cd %s && echo $$ && exec env %s%s >%s 2>%s"):format(quote(self.dir), env,
    table.concat(words, " "), quote(out), quote(err))
  local proc = assert(io.popen(cmd, "r"))
  local pid = assert(tonumber(proc:read("l")), "no pid from the shell")
  local s = setmetatable({ pid = pid, proc = proc, out = out, err = err }, Server)
  local want = opts.listeners or 1
  local deadline = srv.monotime() + 10
  while count(s:stdout(), "listening on ") < want do
    if srv.monotime() > deadline or not s:alive() then
      local status = s:stop("KILL")
      error(("luasrv did not start (%s):\n%s%s"):format(tostring(status), s:stdout(), s:stderr()))
    end
    os.execute("sleep 0.02")
  end
  return s
end

function Server:alive()
  if self.status ~= nil then return false end
  local stat = helper.read_file("/proc/" .. self.pid .. "/stat")
  return stat ~= nil and not stat:match("^%d+ %b() [ZX]")
end

function Server:stop(sig)
  if self.status ~= nil then return self.status end
  os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", self.pid))
  local _, how, code = self.proc:close()
  self.status = how == "exit" and code or ("signal " .. tostring(code))
  return self.status
end

function Server:signal(sig)
  assert(os.execute(("kill -%s %d"):format(sig, self.pid)))
end

function Server:stdout() return helper.read_file(self.out) or "" end
function Server:stderr() return helper.read_file(self.err) or "" end

function Server:cleanup()
  self:stop("KILL")
  os.remove(self.out)
  os.remove(self.err)
end

--- Waits (inside srv.run) until stderr holds `needle` at least n times; returns whether it did.
function Server:wait_log(needle, n, timeout)
  return wait_for(function() return count(self:stderr(), needle) >= n end, timeout or 3)
end

--- Context for a failed assertion: whether the server still runs, and the end of its stderr.
function Server:context()
  local err = self:stderr()
  return ("\n[server %s] stderr (last 3000 bytes):\n%s"):format(
    self:alive() and "running" or ("ended: " .. tostring(self:stop("KILL"))), err:sub(-3000))
end

-- ---- clients --------------------------------------------------------------------------------

--- One GET on a new connection (Connection: close): status, body; or nil and why.
local function get(port, path)
  local ok, c = pcall(H.connect, port, 2)
  if not ok then return nil, tostring(c) end
  c:send(H.get(path or "/", "Connection: close\r\n"))
  local r, err = c:response()
  c:close()
  if not r then return nil, err end
  return r.status, r.body
end

--- Asserts that GET path answers 200 with `body`.
local function assert_get(server, port, path, body)
  local status, got = get(port, path)
  assert(status == 200 and got == body, ("GET %s on %d: expected 200 %q, got %s %q%s"):format(
    path, port, body, tostring(status), tostring(got), server:context()))
end

--- Polls GET path on new connections until it answers 200 `body`; returns the seconds it
-- took, or fails the test after `timeout` seconds.
local function await_body(server, port, path, body, timeout)
  local t0 = srv.monotime()
  local last
  while true do
    local status, got = get(port, path)
    if status == 200 and got == body then return srv.monotime() - t0 end
    last = ("%s %q"):format(tostring(status), tostring(got))
    if srv.monotime() - t0 > (timeout or RELOAD_WITHIN) then
      error(("GET %s on %d did not answer %q within %ss; last answer: %s%s"):format(path, port,
        body, tostring(timeout or RELOAD_WITHIN), last, server:context()), 2)
    end
    srv.sleep(0.005)
  end
end

--- Asserts that connecting to the port is refused (nothing listens there any more).
local function assert_refused(server, port)
  local conn, err, code = srv.tcp.connect("127.0.0.1", port, { timeout = 2 })
  if conn then conn:close() end
  assert(conn == nil and code == "ECONNREFUSED", ("expected port %d to refuse connections, got %s"):format(
    port, conn and "a connection" or (tostring(err) .. " " .. tostring(code))) .. server:context())
end

--- A TCP line client: connects and reads the greeting line.
local function tcp_dial(port)
  local conn, err, code = srv.tcp.connect("127.0.0.1", port, { timeout = 2 })
  assert(conn, ("connect to %d: %s (%s)"):format(port, tostring(err), tostring(code)))
  conn:settimeout(2)
  return conn
end

local function tcp_ask(conn, line)
  assert(conn:write(line, "\n"))
  return conn:readline()
end

-- ---- /proc ----------------------------------------------------------------------------------

local function rss_kib(pid)
  local status = assert(helper.read_file("/proc/" .. pid .. "/status"))
  return assert(tonumber(status:match("VmRSS:%s*(%d+) kB")))
end

local function fd_count(pid)
  local n = 0
  local ls = assert(io.popen("ls /proc/" .. pid .. "/fd"))
  for _ in ls:lines() do n = n + 1 end
  ls:close()
  return n
end

--- The inode numbers the process's inotify instances watch (from /proc/PID/fdinfo).
local function watched_inodes(pid)
  local inodes = {}
  local ls = assert(io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null"))
  for line in ls:lines() do
    local fd = line:match(" (%d+) %-> anon_inode:inotify")
    if fd then
      for info in (helper.read_file("/proc/" .. pid .. "/fdinfo/" .. fd) or ""):gmatch("[^\n]+") do
        local ino = info:match("^inotify wd:%x+ ino:(%x+)")
        if ino then inodes[#inodes + 1] = tonumber(ino, 16) end
      end
    end
  end
  ls:close()
  return inodes
end

local function inode(path)
  local p = assert(io.popen("stat -c %i " .. quote(path)))
  local n = tonumber(p:read("l"))
  p:close()
  return n
end

-- ---- the specs ------------------------------------------------------------------------------

describe("hot reload", function()
  local p, s

  -- Every spec starts one project and one server; both go whatever happens.
  local function start_project(files, opts)
    p = project(files)
    s = p:start(opts)
    return p, s
  end

  after_each(function()
    if s then s:cleanup() end
    if p then p:remove() end
    p, s = nil, nil
  end)

  it("serves every request with the old or the new body while the file is saved ten times under load",
    function()
    local port = free_tcp_ports(1)[1]
    start_project({ ["app.lua"] = "reload_http.lua" }, { flags = { "--reload" }, args = { port } })
    srv.run(function()
      local stop = false
      local last_written = 1   -- the newest version saved
      local newest_seen = 1    -- the newest version answered so far
      local failures = {}
      local served = { keepalive = 0, fresh = 0 }

      local function fail(msg)
        if #failures < 50 then failures[#failures + 1] = msg end
        srv.sleep(0.01)
      end

      -- A response is good if it is a 200 with a version already saved and not older than any
      -- version answered before the request was sent (then the reload had happened already).
      local function check(kind, r, err, floor)
        if not r then
          fail(kind .. ": no response: " .. tostring(err))
          return false
        end
        local v = r.status == 200 and tonumber(r.body:match("^version v(%d+)$"))
        if not v then
          fail(("%s: got %d %q"):format(kind, r.status, r.body:sub(1, 200)))
          return false
        end
        if v < floor or v > last_written then
          fail(("%s: version %d answered after version %d was (newest saved: %d)"):format(kind, v,
            floor, last_written))
          return false
        end
        if v > newest_seen then newest_seen = v end
        served[kind] = served[kind] + 1
        return true
      end

      local function keepalive_client()
        while not stop and #failures < 50 do
          local ok, c = pcall(H.connect, port, 2)
          if not ok then
            fail("keepalive: connect: " .. tostring(c))
          else
            for _ = 1, 100 do
              if stop then break end
              local floor = newest_seen
              local sent, serr = c:send(H.get("/"))
              if not sent then
                fail("keepalive: send: " .. tostring(serr))
                break
              end
              local r, err = c:response()
              if not check("keepalive", r, err, floor) then break end
            end
            c:close()
          end
        end
      end

      local function fresh_client()
        while not stop and #failures < 50 do
          local ok, c = pcall(H.connect, port, 2)
          if not ok then
            fail("fresh: connect: " .. tostring(c))
          else
            local floor = newest_seen
            c:send(H.get("/", "Connection: close\r\n"))
            local r, err = c:response()
            c:close()
            check("fresh", r, err, floor)
          end
        end
      end

      local clients = {}
      for _ = 1, 4 do
        clients[#clients + 1] = spawn(keepalive_client)
        clients[#clients + 1] = spawn(fresh_client)
      end
      srv.sleep(0.1)
      -- Ten saves, 0.2 s apart: alternately rewritten in place and renamed over the file.
      for i = 2, 11 do
        srv.sleep(0.2)
        p:write("app.lua", p:text("app.lua", "v" .. i), i % 2 == 1)
        last_written = i
      end
      local took = await_body(s, port, "/", "version v11")
      srv.sleep(0.1)
      stop = true
      join(clients)
      assert(#failures == 0, ("%d failed requests during the reloads (%d keep-alive and %d new-connection " ..
        "requests served), first ones:\n  %s%s"):format(#failures, served.keepalive, served.fresh,
        table.concat(failures, "\n  ", 1, math.min(#failures, 10)), s:context()))
      assert(took <= RELOAD_WITHIN)
      assert.equal(11, newest_seen)
      -- The load was real: many requests on both kinds of connection.
      assert(served.keepalive >= 200 and served.fresh >= 100, ("too few requests: %d keep-alive, %d new")
        :format(served.keepalive, served.fresh))
    end)
    assert.equal(0, count(s:stderr(), "failed"), s:context())
    assert(count(s:stderr(), "reloaded app.lua") >= 1, s:context())
    H.assert_clean_stop(s)
  end)

  it("sends the next request on an idle kept-alive connection to the new generation, and lets a " ..
    "running request finish on the old one", function()
    local port = free_tcp_ports(1)[1]
    start_project({ ["app.lua"] = "reload_http.lua" }, { flags = { "--reload" }, args = { port } })
    srv.run(function()
      local kept = H.connect(port, 3)
      kept:send(H.get("/"))
      assert.equal("version v1", kept:must_response().body)
      local slow = {}
      local rec = spawn(function() slow.status, slow.body = get(port, "/slow") end)
      srv.sleep(0.05) -- the slow request runs in generation 1
      p:write("app.lua", p:text("app.lua", "v2"))
      await_body(s, port, "/", "version v2")
      join({ rec })
      assert.equal(200, slow.status, tostring(slow.body) .. s:context())
      assert.equal("slow v1", slow.body)
      -- Give the server time to retire generation 1 now that its last request is done (the
      -- kept-alive connection is idle: it may or may not hold the generation).
      srv.sleep(0.2)
      kept:send(H.get("/"))
      local r, err = kept:response()
      assert(r, "no response on the kept-alive connection after the reload: " .. tostring(err) .. s:context())
      assert.equal(200, r.status)
      assert.equal("version v2", r.body)
      kept:close()
      assert(s:wait_log("generation 1 freed", 1, 3), "generation 1 was not freed" .. s:context())
    end)
    H.assert_clean_stop(s)
  end)

  it("keeps the old code serving after a syntax error and after a top-level runtime error, " ..
    "with file:line on stderr, and reloads on the next good save", function()
    local ports = free_tcp_ports(2)
    local port, extra_port = ports[1], ports[2]
    start_project({ ["app.lua"] = "reload_http.lua" }, { flags = { "--reload" }, args = { port } })
    srv.run(function()
      -- A syntax error on the last line.
      local text = p:text("app.lua", "v2", "local broken = = 1\n")
      local syntax_line = line_count(text)
      p:write("app.lua", text)
      assert(s:wait_log("reload of app.lua failed", 1), "no error reported for the syntax error" .. s:context())
      assert.matches("app%.lua:" .. syntax_line .. ":", s:stderr())
      for _ = 1, 3 do assert_get(s, port, "/", "version v1") end

      -- A runtime error at the top level, after the script took over the port and opened one
      -- more: the old generation keeps the port, and the new listener closes again.
      text = p:text("app.lua", "v3",
        ('srv.http.listen({ port = %d }, function() return "extra" end)\n'):format(extra_port) ..
        'error("top-level failure in v3")\n')
      local runtime_line = line_count(text)
      p:write("app.lua", text)
      assert(s:wait_log("reload of app.lua failed", 2), "no error reported for the runtime error" .. s:context())
      assert.matches("app%.lua:" .. runtime_line .. ": top%-level failure in v3", s:stderr())
      for _ = 1, 3 do assert_get(s, port, "/", "version v1") end
      assert_refused(s, extra_port)

      -- The next good save.
      p:write("app.lua", p:text("app.lua", "v4"))
      await_body(s, port, "/", "version v4")
      assert_get(s, port, "/", "version v4")
    end)
    assert.equal(1, count(s:stderr(), "reloaded app.lua"), s:context())
    H.assert_clean_stop(s)
  end)

  it("opens a listener that appears and closes one that vanishes at a reload", function()
    local ports = free_tcp_ports(3)
    start_project({ ["app.lua"] = "reload_listeners.lua" },
      { flags = { "--reload" }, args = ports, listeners = 2 })
    srv.run(function()
      assert_get(s, ports[1], "/", "main v1")
      assert_get(s, ports[2], "/", "second v1 on arg 2")
      assert_refused(s, ports[3])

      p:write("app.lua", p:text("app.lua", "v2", nil, { ["local SECOND = 2"] = "local SECOND = 3" }))
      await_body(s, ports[3], "/", "second v2 on arg 3")
      assert_get(s, ports[1], "/", "main v2")
      assert_refused(s, ports[2])
      assert.truthy(s:stdout():find("listening on http://127.0.0.1:" .. ports[3], 1, true))

      -- And back: the port that vanished can be listened on again.
      p:write("app.lua", p:text("app.lua", "v3"))
      await_body(s, ports[2], "/", "second v3 on arg 2")
      assert_get(s, ports[1], "/", "main v3")
      assert_refused(s, ports[3])
    end)
    H.assert_clean_stop(s)
  end)

  it("survives a request on a kept-alive connection whose listener vanished at a reload", function()
    local ports = free_tcp_ports(3)
    start_project({ ["app.lua"] = "reload_listeners.lua" },
      { flags = { "--reload" }, args = ports, listeners = 2 })
    srv.run(function()
      local kept = H.connect(ports[2], 3)
      kept:send(H.get("/"))
      assert.equal("second v1 on arg 2", kept:must_response().body)
      p:write("app.lua", p:text("app.lua", "v2", nil, { ["local SECOND = 2"] = "local SECOND = 3" }))
      await_body(s, ports[3], "/", "second v2 on arg 3")
      srv.sleep(0.05)
      -- The listener is gone; its connection may be closed, or the request answered, but the
      -- server must neither crash nor answer with a server error.
      kept:send(H.get("/"))
      local r = kept:response()
      kept:close()
      assert(r == nil or r.status < 500, ("got %s %q"):format(r and r.status, r and r.body) .. s:context())
      assert_get(s, ports[1], "/", "main v2")
    end)
    H.assert_clean_stop(s)
  end)

  it("keeps a TCP connection on the generation that accepted it while new connections get the new handler",
    function()
    local port = free_tcp_ports(1)[1]
    start_project({ ["app.lua"] = "reload_tcp.lua" }, { flags = { "--reload" }, args = { port } })
    srv.run(function()
      local old = tcp_dial(port)
      assert.equal("hello v1", old:readline())
      assert.equal("v1:a1", tcp_ask(old, "a1"))

      p:write("app.lua", p:text("app.lua", "v2"))
      local new
      assert(wait_for(function()
        local c = tcp_dial(port)
        local greeting = c:readline()
        if greeting == "hello v2" then
          new = c
          return true
        end
        c:close()
        return false
      end, RELOAD_WITHIN), "no new connection got the new handler" .. s:context())

      assert.equal("v1:a2", tcp_ask(old, "a2"))
      assert.equal("v2:b1", tcp_ask(new, "b1"))
      assert.equal("v1:a3", tcp_ask(old, "a3"))
      -- Generation 1 lives as long as its connection ...
      srv.sleep(0.1)
      assert.equal(0, count(s:stderr(), "generation 1 freed"), s:context())
      -- ... and is freed when it ends.
      old:close()
      assert(s:wait_log("generation 1 freed", 1, 2), "generation 1 was not freed after its connection ended" ..
        s:context())
      assert.equal("v2:b2", tcp_ask(new, "b2"))
      new:close()
    end)
    H.assert_clean_stop(s)
  end)

  it("hands UDP datagrams to the newest generation after a reload", function()
    local port = free_udp_port()
    start_project({ ["app.lua"] = "reload_udp.lua" }, { flags = { "--reload" }, args = { port } })
    srv.run(function()
      local sock = srv.udp.socket({ timeout = 2 })
      local function ask(data)
        assert(sock:sendto(data, "127.0.0.1", port))
        return sock:recvfrom()
      end
      assert.equal("v1:ping", ask("ping"))
      p:write("app.lua", p:text("app.lua", "v2"))
      local n = 0
      assert(wait_for(function()
        n = n + 1
        return ask("probe" .. n) == "v2:probe" .. n
      end, RELOAD_WITHIN), "datagrams did not reach the new generation" .. s:context())
      for i = 1, 20 do
        assert.equal("v2:d" .. i, ask("d" .. i))
      end
      assert(s:wait_log("generation 1 freed", 1, 2), "generation 1 was not freed" .. s:context())
      sock:close()
    end)
    H.assert_clean_stop(s)
  end)

  it("keeps srv.shared across a reload (set, incr, get, keys, delete, ttl)", function()
    local port = free_tcp_ports(1)[1]
    start_project({ ["app.lua"] = "reload_shared.lua" }, { flags = { "--reload" }, args = { port } })
    srv.run(function()
      assert_get(s, port, "/set", "set v1")
      local set_at = srv.monotime()
      for i = 1, 3 do assert_get(s, port, "/hit", tostring(i)) end

      p:write("app.lua", p:text("app.lua", "v2"))
      local dump
      assert(wait_for(function()
        local status, body = get(port, "/dump")
        dump = body
        return status == 200 and body:match("^v2\n") ~= nil
      end, RELOAD_WITHIN), "no reload: " .. tostring(dump) .. s:context())
      -- "short" has a ttl of 1 s: still there unless the reload took most of it.
      assert(srv.monotime() - set_at < 0.9, "the reload took too long to check the ttl")
      assert.equal(table.concat({
        "v2",
        "flag=boolean:false",
        "hits=integer:3",
        "loads=integer:2",
        "long=string:stays",
        "name=string:ann",
        "ratio=float:1.5",
        "short=string:gone soon",
      }, "\n"), dump)

      assert_get(s, port, "/hit", "4")
      assert_get(s, port, "/delete/name", "true")
      assert_get(s, port, "/delete/name", "false")
      assert_get(s, port, "/delete/never-set", "false")

      -- After the ttl, "short" is gone from get and from keys.
      srv.sleep(math.max(0, set_at + 1.15 - srv.monotime()))
      assert_get(s, port, "/dump", table.concat({
        "v2",
        "flag=boolean:false",
        "hits=integer:4",
        "loads=integer:2",
        "long=string:stays",
        "ratio=float:1.5",
      }, "\n"))

      -- One more reload: the counters go on from where they were.
      p:write("app.lua", p:text("app.lua", "v3"))
      assert(wait_for(function()
        local status, body = get(port, "/dump")
        dump = body
        return status == 200 and body:match("^v3\n") ~= nil
      end, RELOAD_WITHIN), "no reload: " .. tostring(dump) .. s:context())
      assert.matches("\nhits=integer:4\nloads=integer:3\n", dump)
      assert_get(s, port, "/hit", "5")
    end)
    H.assert_clean_stop(s)
  end)

  it("leaves RSS and open file descriptors flat over 100 reloads (old generations are freed)", function()
    local ports = free_tcp_ports(2)
    ports[3] = free_udp_port()
    -- Under ASan, freed memory waits in a quarantine before reuse: keep it small here so
    -- that RSS tells whether the states are freed.
    start_project({ ["app.lua"] = "reload_memory.lua" }, { flags = { "--reload" }, args = ports, listeners = 3,
      asan = ":quarantine_size_mb=1" })
    local samples = {}
    srv.run(function()
      local sock = srv.udp.socket({ timeout = 2 })
      local gen = 1
      -- Every generation serves before the next reload: HTTP always, TCP and UDP now and then.
      local function exercise()
        local status, body = get(ports[1], "/")
        assert(status == 200 and body:match("^ballast 64 ticks %d+$"),
          ("generation %d: GET answered %s %q"):format(gen, tostring(status), tostring(body)) .. s:context())
        if gen % 10 == 0 then
          local conn = tcp_dial(ports[2])
          assert.equal("tcp:x 16384", tcp_ask(conn, "x"))
          conn:close()
          assert(sock:sendto("y", "127.0.0.1", ports[3]))
          assert.equal("udp:y", (sock:recvfrom()))
        end
      end
      local function reload_to(target)
        while gen < target do
          gen = gen + 1
          s:signal("HUP")
          assert(s:wait_log(("(generation %d)"):format(gen), 1, 5),
            ("reload to generation %d did not happen"):format(gen) .. s:context())
          exercise()
        end
        -- Every generation but the newest is freed once its last connection has ended.
        assert(s:wait_log(" freed", gen - 1, 5), ("%d generations freed of %d retired"):format(
          count(s:stderr(), " freed"), gen - 1) .. s:context())
        srv.sleep(0.1)
        samples[#samples + 1] = { gen = gen, rss = rss_kib(s.pid), fds = fd_count(s.pid) }
      end
      exercise()
      reload_to(11)   -- 10 reloads
      reload_to(101)  -- 100 reloads
      sock:close()
    end)
    local at10, at100 = samples[1], samples[2]
    local report = ("after 10 reloads: RSS %d KiB, %d fds; after 100: RSS %d KiB, %d fds")
      :format(at10.rss, at10.fds, at100.rss, at100.fds)
    assert(at100.fds == at10.fds, "open file descriptors grew: " .. report)
    assert(at100.rss - at10.rss < 8 * 1024, "RSS grew by 8 MiB or more: " .. report)
    assert.equal(100, count(s:stderr(), " freed"))
    H.assert_clean_stop(s)
  end)

  it("reloads on SIGHUP without --reload, and does not watch files then", function()
    local port = free_tcp_ports(1)[1]
    start_project({ ["app.lua"] = "reload_http.lua" }, { args = { port } })
    srv.run(function()
      assert_get(s, port, "/", "version v1")
      p:write("app.lua", p:text("app.lua", "v2"))
      srv.sleep(0.3)
      assert_get(s, port, "/", "version v1")
      s:signal("HUP")
      await_body(s, port, "/", "version v2")
      assert(s:wait_log("reloaded app.lua", 1), s:context())

      -- A broken file: SIGHUP reports it with file:line and generation 2 goes on.
      local text = p:text("app.lua", "v3", "local broken = = 1\n")
      p:write("app.lua", text)
      s:signal("HUP")
      assert(s:wait_log("reload of app.lua failed", 1), "no error reported" .. s:context())
      assert.matches("app%.lua:" .. line_count(text) .. ":", s:stderr())
      assert_get(s, port, "/", "version v2")

      p:write("app.lua", p:text("app.lua", "v4"))
      s:signal("HUP")
      await_body(s, port, "/", "version v4")
    end)
    H.assert_clean_stop(s)
  end)

  it("reloads when a module required from the project changes, and watches nothing outside it", function()
    local port = free_tcp_ports(1)[1]
    start_project({
      ["app.lua"] = "reload_module_app.lua",
      ["greet.lua"] = "reload_module_greet.lua",
      ["lib/util.lua"] = "reload_module_util.lua",
    }, { flags = { "--reload" }, args = { port } })
    srv.run(function()
      assert_get(s, port, "/", "Hello, ann! [u1]")

      -- Only the project's files are watched: not the luasrv modules, not the standard library.
      local project_inodes = {}
      for _, name in ipairs({ "", "lib", "app.lua", "greet.lua", "lib/util.lua" }) do
        project_inodes[inode(p:path(name))] = true
      end
      local watched = watched_inodes(s.pid)
      assert(#watched > 0, "no inotify watch found")
      for _, ino in ipairs(watched) do
        assert(project_inodes[ino], ("inode %d outside the project is watched"):format(ino))
      end

      p:write("greet.lua", p:text("greet.lua", nil, nil, { ['"Hello, "'] = '"Howdy, "' }))
      await_body(s, port, "/", "Howdy, ann! [u1]")
      p:write("lib/util.lua", p:text("lib/util.lua", nil, nil, { ["[u1]"] = "[u2]" }), true)
      await_body(s, port, "/", "Howdy, ann! [u2]")
      assert(s:wait_log("reloaded app.lua", 2), s:context())

      -- A broken module keeps the old code serving; fixing it reloads.
      local broken = p:text("greet.lua", nil, "local = 1\n")
      p:write("greet.lua", broken)
      assert(s:wait_log("reload of app.lua failed", 1), "no error reported" .. s:context())
      assert.matches("greet%.lua:" .. line_count(broken) .. ":", s:stderr())
      assert_get(s, port, "/", "Howdy, ann! [u2]")
      p:write("greet.lua", p:text("greet.lua", nil, nil, { ['"Hello, "'] = '"Hi, "' }))
      await_body(s, port, "/", "Hi, ann! [u2]")

      -- A Lua file in the directory that nothing requires does not reload.
      local reloads = count(s:stderr(), "reloaded app.lua")
      p:write("notes.lua", "return {}\n")
      srv.sleep(0.3)
      assert.equal(reloads, count(s:stderr(), "reloaded app.lua"), s:context())
    end)
    H.assert_clean_stop(s)
  end)

  it("watches a module that a failed reload required, so fixing that module reloads", function()
    local port = free_tcp_ports(1)[1]
    start_project({
      ["app.lua"] = "reload_module_app.lua",
      ["greet.lua"] = "reload_module_greet.lua",
      ["lib/util.lua"] = "reload_module_util.lua",
    }, { flags = { "--reload" }, args = { port } })
    srv.run(function()
      assert_get(s, port, "/", "Hello, ann! [u1]")
      -- The app now needs a new module, saved with a syntax error.
      local broken = "return { word = = 1 }\n"
      p:write("extra.lua", broken)
      p:write("app.lua", p:text("app.lua", nil, nil, {
        ['local util = require "lib.util"'] = 'local util = require "lib.util"\nlocal extra = require "extra"',
        ['util.tag()'] = 'util.tag() .. " " .. extra.word',
      }))
      assert(s:wait_log("reload of app.lua failed", 1), "no error reported" .. s:context())
      assert.matches("extra%.lua:1:", s:stderr())
      assert_get(s, port, "/", "Hello, ann! [u1]")
      -- Fixing the module is the next good save.
      p:write("extra.lua", 'return { word = "fixed" }\n')
      await_body(s, port, "/", "Hello, ann! [u1] fixed")
    end)
    H.assert_clean_stop(s)
  end)
end)
