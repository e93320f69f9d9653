-- Conformance: the luasrv command line (options, exit statuses, errors, signals, arg).
local srv = require "luasrv"
local helper = require "helper"
local C = require "conformance"

local exec, fixture = C.exec, C.fixture

local function dial(port)
  local conn, err, code = srv.tcp.connect("127.0.0.1", port, { timeout = 5 })
  assert(conn, ("connect failed: %s (%s)"):format(tostring(err), tostring(code)))
  conn:settimeout(5)
  return conn
end

describe("luasrv --help and --version", function()
  it("--help prints the usage on stdout and exits 0", function()
    local status, out, err = exec({ "--help" })
    assert.equal(0, status)
    assert.matches("^usage: luasrv %[options%] script%.lua %[args%.%.%.%]\n", out)
    for _, opt in ipairs({ "--check", "--quiet", "--dev", "--grace", "--version", "--help" }) do
      assert.is_truthy(out:find(opt, 1, true), "--help does not mention " .. opt)
    end
    assert.equal("", err)
  end)

  it("--version prints the version on one line and exits 0", function()
    local status, out, err = exec({ "--version" })
    assert.equal(0, status)
    assert.matches("^luasrv %S+", out)
    assert.is_truthy(out:find(srv.version, 1, true), "the module and the binary disagree")
    assert.equal(1, C.count_lines(out))
    assert.equal("", err)
  end)

  it("--help wins over a script argument and runs nothing", function()
    local status, out = exec({ "--help", fixture("conf_cli_client.lua") })
    assert.equal(0, status)
    assert.is_nil(out:find("arg[0]", 1, true))
  end)
end)

describe("luasrv usage errors", function()
  local function usage_error(args, mention)
    local status, out, err = exec(args)
    assert.equal(2, status, "exit status for " .. table.concat(args, " "))
    assert.equal(1, C.count_lines(err), "expected one line on stderr, got: " .. err)
    assert.matches("^luasrv: ", err)
    assert.matches("%(see luasrv %-%-help%)\n$", err)
    if mention then assert.is_truthy(err:find(mention, 1, true), err) end
    assert.equal("", out)
  end

  it("an unknown option exits 2 with a one-line reason", function()
    usage_error({ "--bogus", fixture("conf_cli_client.lua") }, "--bogus")
  end)

  it("no script exits 2 with a one-line reason", function()
    usage_error({}, "script")
    usage_error({ "--quiet" }, "script")
  end)

  it("--grace without a number exits 2", function()
    usage_error({ "--grace" }, "--grace")
    usage_error({ "--grace", "soon", fixture("conf_cli_client.lua") }, "soon")
    usage_error({ "--grace", "-1", fixture("conf_cli_client.lua") }, "-1")
  end)

  it("--shared-size out of range exits 2", function()
    usage_error({ "--shared-size", "0.01", fixture("conf_cli_client.lua") }, "--shared-size")
    usage_error({ "--shared-size", "big", fixture("conf_cli_client.lua") }, "big")
  end)
end)

describe("luasrv --shared-size", function()
  it("sets the size of srv.shared, which defaults to 16 MiB", function()
    local script = helper.tmpname(".lua")
    helper.write_file(script, 'print(require("luasrv").shared.capacity())')
    local status, out = exec({ script })
    assert.equal(0, status)
    assert.equal(tostring(16 * 1024 * 1024) .. "\n", out)
    status, out = exec({ "--shared-size", "1", script })
    assert.equal(0, status)
    assert.equal(tostring(1024 * 1024) .. "\n", out)
    os.remove(script)
  end)
end)

describe("luasrv script errors", function()
  it("a missing script file is a clear error, not zero", function()
    local missing = helper.tmpname("-missing.lua")
    local status, out, err = exec({ missing })
    assert.is_true(status ~= 0, "exit status 0 for a missing script")
    assert.equal(1, status)
    assert.matches("^luasrv: ", err)
    assert.is_truthy(err:find(missing, 1, true), "the message does not name the file: " .. err)
    assert.matches("cannot open", err)
    assert.equal("", out)
  end)

  it("a top-level runtime error exits 1 with 'luasrv: file:line: message'", function()
    local path = fixture("conf_cli_runtime_error.lua")
    local status, out, err = exec({ path })
    assert.equal(1, status)
    assert.equal("before the error\n", out)
    local line = C.line_of(path, 'error("top-level failure")')
    assert.matches("^luasrv: [^\n]*conf_cli_runtime_error%.lua:" .. line .. ": top%-level failure\n", err)
  end)

  it("a top-level error after opening a listener still exits 1 (it does not serve)", function()
    local path = fixture("conf_cli_listen_then_fail.lua")
    local status, _, err = exec({ path }, 20)
    assert.equal(1, status)
    assert.matches("^luasrv: [^\n]*conf_cli_listen_then_fail%.lua:" ..
      C.line_of(path, "print(config.port)") .. ": attempt to index a nil value", err)
  end)
end)

describe("luasrv --check", function()
  it("on a good script prints ok, exits 0 and runs nothing", function()
    local path = fixture("conf_cli_server.lua")
    local status, out, err = exec({ "--check", path }, 20)
    assert.equal(0, status, err)
    assert.matches("ok", out)
    assert.equal(path .. ": ok\n", out)
    assert.is_nil(out:find("top level ran", 1, true))
    assert.is_nil(out:find("listening on", 1, true))
  end)

  it("on a syntax error reports file:line and exits non-zero", function()
    local path = fixture("conf_cli_syntax_error.lua")
    local status, out, err = exec({ "--check", path })
    assert.is_true(status ~= 0, "--check passed a syntax error")
    assert.equal(1, status)
    assert.matches("conf_cli_syntax_error%.lua:4:", err)
    assert.is_nil(out:find("ok", 1, true))
  end)

  it("running a script with a syntax error reports file:line and exits 1", function()
    local status, out, err = exec({ fixture("conf_cli_syntax_error.lua") })
    assert.equal(1, status)
    assert.matches("^luasrv: [^\n]*conf_cli_syntax_error%.lua:4:", err)
    assert.equal("", out)
  end)
end)

describe("luasrv client scripts", function()
  it("a script with no listeners runs to completion and exits 0 with its output", function()
    local path = fixture("conf_cli_client.lua")
    local status, out, err = exec({ path }, 20)
    assert.equal(0, status, err)
    assert.matches("timer fired\ndone\n$", out)
  end)

  it("passes its arguments in arg and ... as lua does", function()
    local path = fixture("conf_cli_client.lua")
    local status, out = exec({ "--quiet", path, "one", "two words", "--flag", "" }, 20)
    assert.equal(0, status)
    local want = table.concat({
      "arg[0]=" .. path,
      "arg[-1]=--quiet",
      "arg[-2]=" .. helper.bin,
      "#arg=4",
      "arg[1]=one",
      "arg[2]=two words",
      "arg[3]=--flag",
      "arg[4]=",
      "...=one|two words|--flag|",
    }, "\n") .. "\n"
    assert.equal(want, out:sub(1, #want))
  end)

  it("os.exit(n) in the script sets the exit status", function()
    local status, out = exec({ fixture("conf_cli_client.lua"), "--exit", "3" }, 20)
    assert.equal(3, status)
    assert.matches("done\n$", out)
  end)

  it("stops parsing options at the script or at --", function()
    local path = fixture("conf_cli_client.lua")
    local status, out = exec({ "--", path, "--version" }, 20)
    assert.equal(0, status)
    assert.matches("arg%[0%]=" .. path:gsub("%p", "%%%0") .. "\n", out)
    assert.matches("arg%[1%]=%-%-version\n", out)
    assert.is_nil(out:find("luasrv 0", 1, true), "--version after the script was taken as an option")
  end)
end)

describe("luasrv signals", function()
  -- Starts the fixture server; it is killed and its files removed however the test ends.
  local function start(opts)
    local server = helper.start(fixture("conf_cli_server.lua"), opts)
    finally(function() server:cleanup() end)
    return server
  end

  local function round_trip(server)
    srv.run(function()
      local conn = dial(server.port)
      conn:write("hello\n")
      assert.equal("done:hello", conn:readline())
      conn:close()
    end)
  end

  it("--quiet drops info lines but keeps warnings", function()
    local server = start({ flags = { "--quiet" } })
    local status = C.stop_within(server, "TERM", 10)
    local err = server:stderr()
    assert.equal(0, status, "stderr:\n" .. err)
    assert.is_nil(err:find("an info line", 1, true))
    assert.is_truthy(err:find("a warn line", 1, true))
  end)

  it("SIGTERM with listeners exits 0", function()
    local server = start({ args = { "0.01" } })
    round_trip(server)
    local status = C.stop_within(server, "TERM", 10)
    assert.equal(0, status, "stderr:\n" .. server:stderr())
  end)

  it("SIGINT with listeners exits 0", function()
    local server = start({ args = { "0.01" } })
    round_trip(server)
    local status = C.stop_within(server, "INT", 10)
    assert.equal(0, status, "stderr:\n" .. server:stderr())
  end)

  it("SIGINT stops at once (as --help and the docs say), not after the grace period", function()
    local server = start({ flags = { "--grace", "4" }, args = { "30" } })
    local conn
    srv.run(function()
      conn = dial(server.port)
      conn:write("slow\n")
      srv.sleep(0.1) -- the handler is now in its 30 s sleep
    end)
    local t0 = srv.monotime()
    local status = C.stop_within(server, "INT", 10)
    local elapsed = srv.monotime() - t0
    local err = server:stderr()
    srv.run(function() conn:close() end)
    assert.equal(0, status, "stderr:\n" .. err)
    assert.is_nil(err:find("grace period over", 1, true), "SIGINT waited for the grace period")
    assert.is_true(elapsed < 2.5, ("SIGINT took %.1f s to stop the server"):format(elapsed))
  end)

  it("SIGTERM lets a running handler finish, refuses new connections, then exits 0", function()
    local server = start({ args = { "0.3" } })
    srv.run(function()
      local conn = dial(server.port)
      conn:write("in flight\n")
      srv.sleep(0.05) -- the handler is now sleeping
      os.execute("kill -TERM " .. server.pid)
      srv.sleep(0.05)
      local late, _, code = srv.tcp.connect("127.0.0.1", server.port, { timeout = 5 })
      if late then late:close() end
      assert.is_nil(late, "a new connection was accepted after SIGTERM")
      assert.equal("ECONNREFUSED", code)
      assert.equal("done:in flight", conn:readline())
      conn:close()
    end)
    local status = C.wait_within(server, 10, "SIGTERM and the last handler's end")
    assert.equal(0, status, "stderr:\n" .. server:stderr())
  end)

  it("SIGTERM gives up after --grace seconds and exits", function()
    local server = start({ flags = { "--grace", "0.2" }, args = { "30" } })
    local conn
    srv.run(function()
      conn = dial(server.port)
      conn:write("stuck\n")
      srv.sleep(0.05)
    end)
    local status = C.stop_within(server, "TERM", 10)
    local err = server:stderr()
    srv.run(function() conn:close() end)
    assert.equal(0, status, "stderr:\n" .. err)
    assert.matches("grace period over", err)
  end)
end)

describe("scripts/run", function()
  -- Only where the specs test the build scripts/run makes (build/), so that it has nothing to
  -- rebuild; the sanitizer run tests build-sanitize/ and leaves this to the normal run.
  local root = helper.root
  local ours = helper.bin == root .. "/build/luasrv"

  it("prints nothing of the build when nothing changed", function()
    if not ours then return pending("the specs run against " .. helper.bin .. ", not build/luasrv") end
    local out = helper.capture(("cd %s && scripts/run --version 2>&1"):format(helper.shell_quote(root)))
    assert.matches("^luasrv %d+%.%d+%.%d+ %b()\n$", out)
  end)
end)

describe("where luasrv finds its Lua files", function()
  local dir

  before_each(function()
    dir = helper.tmpname("-copy")
    assert(helper.run(("mkdir -p %s/bin && cp %s %s/bin/luasrv"):format(helper.shell_quote(dir),
      helper.shell_quote(helper.bin), helper.shell_quote(dir))))
    helper.write_file(dir .. "/probe.lua", 'print((require("luasrv.marker")))\n')
  end)

  after_each(function() helper.run("rm -rf " .. helper.shell_quote(dir)) end)

  local function run(env)
    return helper.capture(("cd %s && %s bin/luasrv probe.lua 2>&1"):format(helper.shell_quote(dir),
      env or "env -u LUASRV_LUA_DIR -u LUA_PATH -u LUA_PATH_5_4"))
  end

  it("a copied binary does not load the source tree's lua/ behind the user's back", function()
    -- The source tree has no luasrv/marker.lua either, so both answers would fail; what
    -- matters is where it looked: the install prefix, never the source tree.
    local out = run()
    assert.matches("module 'luasrv.marker' not found", out)
    assert.falsy(out:find(helper.root .. "/lua/", 1, true), out)
  end)

  it("an installed layout (bin/ beside share/luasrv/lua) loads its own files", function()
    assert(helper.run(("mkdir -p %s/share/luasrv && cp -r %s/lua %s/share/luasrv/lua"):format(
      helper.shell_quote(dir), helper.shell_quote(helper.root), helper.shell_quote(dir))))
    helper.write_file(dir .. "/share/luasrv/lua/luasrv/marker.lua", 'return "installed copy"\n')
    assert.equal("installed copy\n", run())
  end)

  it("LUASRV_LUA_DIR comes first", function()
    assert(helper.run(("mkdir -p %s/elsewhere/luasrv"):format(helper.shell_quote(dir))))
    helper.write_file(dir .. "/elsewhere/luasrv/marker.lua", 'return "from LUASRV_LUA_DIR"\n')
    assert.equal("from LUASRV_LUA_DIR\n", run("env -u LUA_PATH -u LUA_PATH_5_4 LUASRV_LUA_DIR=" ..
      helper.shell_quote(dir .. "/elsewhere")))
  end)
end)

describe("luasrv test", function()
  it("runs a project's ./spec with busted, luasrv's modules found without LUA_PATH", function()
    local dir = helper.tmpname("-proj")
    assert(helper.run(("mkdir -p %s/spec"):format(helper.shell_quote(dir))))
    helper.write_file(dir .. "/spec/upper_spec.lua", [[
local srv = require "luasrv"
describe("upper", function()
  it("answers in capitals", function()
    srv.run(function()
      local l = srv.tcp.listen({ port = 0 }, function(conn)
        for line in conn:lines() do conn:write(line:upper(), "\n") end
      end)
      local conn = assert(srv.tcp.connect(l:address()))
      conn:settimeout(5)
      conn:write("hello\n")
      assert.equal("HELLO", conn:readline())
      conn:close()
      l:close()
    end)
  end)
end)
]])
    local cmd = ("cd %s && env -u LUA_PATH -u LUA_CPATH %s test 2>&1; echo \"exit=$?\""):format(
      helper.shell_quote(dir), helper.shell_quote(helper.bin))
    -- The sanitizer build's core.so needs the sanitizer runtimes preloaded, as the specs'
    -- own interpreter has them: keep the preload there.
    local function capture(c)
      if not os.getenv("LUASRV_SANITIZED") then return helper.capture(c) end
      local p = assert(io.popen(c))
      local text = p:read("a")
      p:close()
      return text
    end
    local out = capture(cmd)
    assert.matches("1 success / 0 failures / 0 errors", out)
    assert.matches("exit=0\n$", out)
    -- a failing spec fails the command
    helper.write_file(dir .. "/spec/fail_spec.lua", 'it("fails", function() assert.equal(1, 2) end)\n')
    out = capture(cmd)
    assert.matches("1 failure", out)
    assert.falsy(out:find("exit=0\n", 1, true), out)
    helper.run("rm -rf " .. helper.shell_quote(dir))
  end)
end)
