--- Shared helpers for the conformance specs (tcp, handler_errors, timers, cli).
-- Not a spec itself (the name does not end in _spec), so ctest does not run it.
local srv = require "luasrv"
local helper = require "helper"

local M = {}

--- Path of a fixture script in tests/fixtures/.
function M.fixture(name)
  return helper.path("tests/fixtures/" .. name)
end

--- The line number of the first line of `path` containing `needle` (plain text).
function M.line_of(path, needle)
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    if line:find(needle, 1, true) then return n end
  end
  error(("%s does not contain %q"):format(path, needle), 2)
end

--- Starts fn(...) as a separate task on the loop (see helper.spawn).
M.spawn = helper.spawn

--- Waits (polling with srv.sleep) until cond() is true; raises after `timeout` seconds.
function M.wait_until(cond, timeout, what)
  local deadline = srv.monotime() + (timeout or 10)
  while not cond() do
    if srv.monotime() > deadline then
      error("timed out waiting for " .. (what or "a condition"), 2)
    end
    srv.sleep(0.005)
  end
end

--- Waits for every spawned record, then re-raises the first failure.
function M.join(recs, timeout)
  M.wait_until(function()
    for _, r in ipairs(recs) do
      if not r.done then return false end
    end
    return true
  end, timeout or 20, "spawned tasks")
  for _, r in ipairs(recs) do
    if not r.ok then error(r.err, 0) end
  end
end

--- Listens with opts (port 0 unless a path is given), calls fn(listener, host, port) and
-- always closes the listener. Call from inside srv.run.
function M.with_listener(opts, handler, fn)
  if opts.path == nil and opts.port == nil then opts.port = 0 end
  local l = srv.tcp.listen(opts, handler)
  local ok, err = pcall(fn, l, l:address())
  l:close()
  if not ok then error(err, 0) end
end

--- Whether the process has ended (an ended child stays a zombie until it is waited for).
local function ended(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return true end
  local stat = f:read("a") or ""
  f:close()
  local state = stat:match("^%d+ %b() (%a)")
  return state == nil or state == "Z" or state == "X"
end

--- Sends `sig` to a server started by helper.start and waits at most `timeout` seconds for it
-- to end. Returns its exit status (as Server:stop does), or raises after killing it.
function M.stop_within(server, sig, timeout)
  os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", server.pid))
  return M.wait_within(server, timeout, "SIG" .. (sig or "TERM"))
end

--- Waits at most `timeout` seconds for a server to end by itself (no signal sent). Returns its
-- exit status, or raises after killing it.
function M.wait_within(server, timeout, after)
  local deadline = srv.monotime() + (timeout or 10)
  while not ended(server.pid) do
    if srv.monotime() > deadline then
      local status = server:stop("KILL")
      error(("luasrv did not exit within %ss of %s (then killed: %s)\nstderr:\n%s"):format(
        tostring(timeout or 10), after or "waiting", tostring(status), server:stderr()), 2)
    end
    os.execute("sleep 0.02")
  end
  return server:wait()
end

--- Runs `luasrv args...` to completion under a watchdog (killed after `limit` seconds).
-- Returns exit status (a number, or "signal N"), stdout, stderr.
function M.exec(args, limit)
  local out, err = helper.tmpname(".out"), helper.tmpname(".err")
  local words = { helper.bin }
  for _, a in ipairs(args) do words[#words + 1] = helper.shell_quote(a) end
  local env = ""
  if os.getenv("LUASRV_SANITIZED") then
    env = "LD_PRELOAD= ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 "
  end
  local cmd = ("exec env %stimeout -s KILL %d %s </dev/null >%s 2>%s"):format(env, limit or 20,
    table.concat(words, " "), helper.shell_quote(out), helper.shell_quote(err))
  local _, how, code = os.execute(cmd)
  local o, e = helper.read_file(out) or "", helper.read_file(err) or ""
  os.remove(out)
  os.remove(err)
  return how == "exit" and code or ("signal " .. tostring(code)), o, e
end

--- Number of lines in s (a final line without "\n" counts).
function M.count_lines(s)
  local n = select(2, s:gsub("\n", "\n"))
  if #s > 0 and s:sub(-1) ~= "\n" then n = n + 1 end
  return n
end

return M
