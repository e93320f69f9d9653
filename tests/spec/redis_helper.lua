--- Helpers for the Redis specs: a real redis-server on a free port (persistence off), started
-- and stopped by the spec, and the redis-cli command line that talks to it.
local srv = require "luasrv"
local helper = require "helper"

local M = {}

local Redis = {}
Redis.__index = Redis

--- Whether redis-server is installed (scripts/setup installs it).
function M.available()
  return helper.capture("command -v redis-server") ~= ""
end

-- Whether something answers PING on the server's port (with the password, if any).
local function answers(self)
  return helper.capture(self:cli_command("PING") .. " 2>/dev/null"):match("PONG") ~= nil
end

--- Starts redis-server. opts: port (default: a free one), password, extra (list of more
-- arguments), unixsocket (true: also listen on a socket file, see .path).
function M.start(opts)
  opts = opts or {}
  local self = setmetatable({ port = opts.port or helper.free_tcp_ports(1)[1],
    password = opts.password, log = helper.tmpname(".redis.log") }, Redis)
  local words = { "redis-server", "--port", tostring(self.port), "--bind", "127.0.0.1",
    "--save", "''", "--appendonly", "no", "--daemonize", "no", "--logfile", self.log }
  if opts.password then
    words[#words + 1] = "--requirepass"
    words[#words + 1] = helper.shell_quote(opts.password)
  end
  if opts.unixsocket then
    self.path = helper.tmpname(".redis.sock")
    words[#words + 1] = "--unixsocket " .. self.path .. " --unixsocketperm 700"
  end
  for _, a in ipairs(opts.extra or {}) do words[#words + 1] = helper.shell_quote(a) end
  local cmd = "echo $$; exec " .. table.concat(words, " ") .. " >/dev/null 2>&1"
  self.proc = assert(io.popen(helper.clean(cmd), "r"))
  self.pid = assert(tonumber(self.proc:read("l")), "no pid from the shell")
  local deadline = srv.monotime() + 10
  while not answers(self) do
    if srv.monotime() > deadline then
      self:stop("KILL")
      error("redis-server did not start: " .. (helper.read_file(self.log) or ""))
    end
    os.execute("sleep 0.05")
  end
  return self
end

--- A redis-cli command line for this server (arguments already quoted by the caller).
function Redis:cli_command(args)
  local auth = self.password and (" --no-auth-warning -a " .. helper.shell_quote(self.password)) or ""
  return ("redis-cli -h 127.0.0.1 -p %d%s %s"):format(self.port, auth, args)
end

--- Runs redis-cli with `args` and returns its output without the final newline.
function Redis:cli(args)
  return (helper.capture(self:cli_command(args)):gsub("\n$", ""))
end

--- How many client connections the server has (CLIENT LIST through redis-cli, minus itself).
function Redis:clients()
  local out = helper.capture(self:cli_command("CLIENT LIST"))
  return helper.count(out, "id=") - 1
end

--- Stops the server (default signal KILL: no shutdown work, and no dump since --save "").
function Redis:stop(sig)
  if self.stopped then return end
  self.stopped = true
  os.execute(("kill -%s %d 2>/dev/null"):format(sig or "KILL", self.pid))
  self.proc:close()
  os.remove(self.log)
  if self.path then os.remove(self.path) end
end

--- Connect options for the server.
function Redis:opts(extra)
  local o = { host = "127.0.0.1", port = self.port, password = self.password, timeout = 5 }
  for k, v in pairs(extra or {}) do
    if v == false then v = nil end -- false removes a default (the password)
    o[k] = v
  end
  return o
end

return M
