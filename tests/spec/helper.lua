--- Helpers for the behaviour specs: start the real luasrv binary on port 0, find its
-- address from the "listening on" line, stop it with a signal and read its exit status.
local srv = require "luasrv"

local M = {}

M.bin = assert(os.getenv("LUASRV_BIN"), "LUASRV_BIN is not set (run the specs through ctest)")
M.root = os.getenv("LUASRV_ROOT") or "."

local tmp_seq = 0

--- A fresh temporary file name.
function M.tmpname(suffix)
  tmp_seq = tmp_seq + 1
  return ("%s/luasrv-spec-%d-%d%s"):format(os.getenv("TMPDIR") or "/tmp",
    math.floor(srv.monotime() * 1e6) % 1000000000, tmp_seq, suffix or "")
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

--- A shell command line that runs `cmd` without the sanitizer runtimes the spec interpreter
-- is preloaded with in the sanitizer build (curl, python3 and friends hang or fail under them).
function M.clean(cmd)
  if os.getenv("LD_PRELOAD") and os.getenv("LD_PRELOAD") ~= "" then
    return "LD_PRELOAD= exec sh -c " .. shell_quote(cmd)
  end
  return cmd
end

--- Runs a shell command (without the sanitizer preload) and returns its standard output.
function M.capture(cmd)
  local p = assert(io.popen(M.clean(cmd)))
  local out = p:read("a")
  p:close()
  return out
end

--- Runs a shell command (without the sanitizer preload); returns os.execute's results.
function M.run(cmd)
  return os.execute(M.clean(cmd))
end

local function sleep(s)
  os.execute("sleep " .. s)
end

--- n TCP ports that were free a moment ago (each bound on port 0, then closed), for servers
-- that must keep one address across reloads.
function M.free_tcp_ports(n)
  return srv.run(function()
    local listeners, ports = {}, {}
    for i = 1, n do
      listeners[i] = srv.tcp.listen({ port = 0 }, function() end)
      ports[i] = select(2, listeners[i]:address())
    end
    for _, l in ipairs(listeners) do l:close() end
    return ports
  end)
end

--- How many times the plain text `needle` occurs in `text`.
function M.count(text, needle)
  local n, i = 0, 1
  while true do
    local s, e = text:find(needle, i, true)
    if not s then return n end
    n, i = n + 1, e + 1
  end
end

local Server = {}
Server.__index = Server

--- Starts `luasrv [flags] script [args]`. opts: flags (list), args (list), wait (seconds to
-- wait for the listening lines, default 10), listeners (how many lines to wait for, default 1;
-- 0 waits for nothing), env (more environment variables, a table). Returns a Server with pid,
-- url, host, port, urls.
function M.start(script, opts)
  opts = opts or {}
  local out, err = M.tmpname(".out"), M.tmpname(".err")
  local words = { M.bin }
  for _, f in ipairs(opts.flags or {}) do words[#words + 1] = shell_quote(f) end
  words[#words + 1] = shell_quote(script)
  for _, a in ipairs(opts.args or {}) do words[#words + 1] = shell_quote(a) end
  local env = ""
  if os.getenv("LUASRV_SANITIZED") then
    env = "LD_PRELOAD= ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 "
  end
  for name, value in pairs(opts.env or {}) do -- opts.env: more environment variables
    env = env .. name .. "=" .. shell_quote(value) .. " "
  end
  local cmd = ("echo $$; exec env %s%s >%s 2>%s"):format(env, table.concat(words, " "),
    shell_quote(out), shell_quote(err))
  local proc = assert(io.popen(cmd, "r"))
  local pid = assert(tonumber(proc:read("l")), "no pid from the shell")
  local self = setmetatable({ pid = pid, proc = proc, out = out, err = err, urls = {} }, Server)
  local want = opts.listeners or 1
  local deadline = srv.monotime() + (opts.wait or 10)
  while #self.urls < want do
    local text = M.read_file(out) or ""
    self.urls = {}
    for url in text:gmatch("listening on (%S+)") do self.urls[#self.urls + 1] = url end
    if #self.urls >= want then break end
    if srv.monotime() > deadline or not self:alive() then
      local status = self:stop("KILL")
      error(("luasrv %s did not start (%s): %s%s"):format(script, tostring(status),
        M.read_file(out) or "", M.read_file(err) or ""))
    end
    sleep(0.02)
  end
  if self.urls[1] then
    self.url = self.urls[1]
    self.host, self.port = self.url:match("^%a+://%[?([^%]]-)%]?:(%d+)$")
    self.port = tonumber(self.port)
  end
  return self
end

function Server:alive()
  if self.status ~= nil then return false end
  -- kill -0 also succeeds on a zombie (ended, not yet reaped by proc:close()): ask /proc.
  local stat = M.read_file("/proc/" .. self.pid .. "/stat")
  if stat then return not stat:match("^%d+ %b() Z") end
  return os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == true
end

--- Sends a signal (default TERM) and waits for the process; returns its exit status, or
-- "signal N" when a signal ended it.
function Server:stop(sig)
  if self.status ~= nil then return self.status end
  os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", self.pid))
  local _, how, code = self.proc:close()
  self.status = how == "exit" and code or ("signal " .. tostring(code))
  return self.status
end

--- Waits for the process to end by itself; returns its exit status.
function Server:wait()
  if self.status ~= nil then return self.status end
  local _, how, code = self.proc:close()
  self.status = how == "exit" and code or ("signal " .. tostring(code))
  return self.status
end

function Server:stdout() return M.read_file(self.out) or "" end
function Server:stderr() return M.read_file(self.err) or "" end

function Server:cleanup()
  self:stop("KILL")
  os.remove(self.out)
  os.remove(self.err)
end

--- Runs `luasrv args...` to completion: returns exit status, stdout, stderr.
--- Starts fn(...) as a separate task on the loop (through srv.after(0, ...)); call from inside
-- srv.run. Returns a record whose `done`, `ok` and `err` fields fill in when fn ends.
function M.spawn(fn, ...)
  local args = table.pack(...)
  local rec = { done = false }
  srv.after(0, function()
    local ok, err = xpcall(fn, debug.traceback, table.unpack(args, 1, args.n))
    rec.ok, rec.err, rec.done = ok, err, true
  end)
  return rec
end

function M.exec(args, input)
  local out, err, inp = M.tmpname(".out"), M.tmpname(".err"), M.tmpname(".in")
  M.write_file(inp, input or "")
  local words = { M.bin }
  for _, a in ipairs(args) do words[#words + 1] = shell_quote(a) end
  local env = os.getenv("LUASRV_SANITIZED") and "env LD_PRELOAD= " or ""
  local _, how, code = os.execute(("%s%s <%s >%s 2>%s"):format(env, table.concat(words, " "),
    shell_quote(inp), shell_quote(out), shell_quote(err)))
  local o, e = M.read_file(out), M.read_file(err)
  os.remove(out); os.remove(err); os.remove(inp)
  return how == "exit" and code or ("signal " .. tostring(code)), o, e
end

--- Path of a file in the source tree.
function M.path(rel)
  return M.root .. "/" .. rel
end

return M
