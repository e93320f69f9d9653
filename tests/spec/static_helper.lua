--- Shared by the static file specs (tests/spec/static_*_spec.lua): builds the directory tree
-- that tests/fixtures/static_app.lua serves, starts it, and reads a process's memory.
-- Not a spec itself (the name does not end in _spec).
local H = require "http_helper"
local helper = H.helper

local S = {}

local q = helper.shell_quote

-- Under the sanitizer build the spec's interpreter runs with the sanitizer runtimes in
-- LD_PRELOAD, which would be inherited by the tools run here: curl hangs with them. Commands
-- run without.
local clean = helper.clean

local function sh(cmd)
  local ok = os.execute(clean(cmd))
  assert(ok, "command failed: " .. cmd)
end
S.sh = sh

--- 1000 bytes: "0123456789" a hundred times, so any range's content is easy to predict.
S.DATA = ("0123456789"):rep(100)
S.SECRET = "TOP-SECRET-CONTENT"

--- Makes the tree under a fresh temporary directory and returns its path.
function S.make_tree()
  local root = helper.tmpname("-static")
  local site = root .. "/site"
  sh(("mkdir -p %s/sub %s/docs %s/.well-known %s/outside %s/pre %s/site/empty")
    :format(q(site), q(site), q(site), q(root), q(root), q(root)))
  local files = {
    ["site/index.html"] = "<h1>index</h1>\n",
    ["site/404.html"] = "<h1>custom not found page</h1>\n",
    ["site/style.css"] = "body { color: red }\n",
    ["site/data.bin"] = S.DATA,
    ["site/route.txt"] = "from the file\n",
    ["site/image.svg"] = "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n",
    ["site/app.wasm"] = "\0asm",
    ["site/noext"] = "no extension\n",
    ["site/unknown.zzzq"] = "unknown extension\n",
    ["site/a b.txt"] = "space in the name\n",
    ["site/empty.txt"] = "",
    ["site/.env"] = S.SECRET,
    ["site/.well-known/token.txt"] = "acme token\n",
    ["site/sub/a.txt"] = "in sub\n",
    ["site/docs/index.html"] = "<h1>docs</h1>\n",
    ["secret.txt"] = S.SECRET,
    ["outside/secret2.txt"] = S.SECRET,
    ["pre/app.js"] = "console.log('plain');\n",
    ["pre/app.js.gz"] = "GZIP-BYTES",
    ["pre/app.js.br"] = "BROTLI-BYTES",
    ["pre/only-gz.css"] = "p { margin: 0 }\n",
    ["pre/only-gz.css.gz"] = "GZIP-CSS",
  }
  for name, content in pairs(files) do helper.write_file(root .. "/" .. name, content) end
  -- Links: out of the root (relative, absolute, a directory) and inside it (both kinds).
  sh(("ln -s ../secret.txt %s/escape.txt"):format(q(site)))
  sh(("ln -s %s/secret.txt %s/escape_abs.txt"):format(q(root), q(site)))
  sh(("ln -s ../outside %s/escape_dir"):format(q(site)))
  sh(("ln -s style.css %s/inside_rel.css"):format(q(site)))
  sh(("ln -s %s/style.css %s/inside_abs.css"):format(q(site), q(site)))
  sh(("ln -s sub %s/sub_link"):format(q(site)))
  sh(("mkfifo %s/fifo"):format(q(site)))
  return root
end

function S.remove_tree(root)
  if root and root:find("luasrv%-spec") then os.execute("rm -rf " .. q(root)) end
end

--- Starts the fixture on a new tree; returns server, port, root.
function S.start()
  local root = S.make_tree()
  local server = H.start("static_app.lua", { args = { root } })
  return server, server.port, root
end

--- Starts the fixture on a new tree with extra environment variables ("NAME=value" words);
-- returns server, port, root. The server object has the same methods as helper.start's.
function S.start_env(env)
  local root = S.make_tree()
  local saved = helper.bin
  -- helper.start runs `exec env [sanitizer settings] BIN ...`: BIN may carry assignments.
  helper.bin = env .. " " .. saved
  local ok, server = pcall(H.start, "static_app.lua", { args = { root } })
  helper.bin = saved
  if not ok then error(server, 0) end
  return server, server.port, root
end

--- A field of /proc/PID/status in KiB (VmRSS, VmHWM), or nil.
function S.proc_kib(pid, field)
  local text = helper.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(text:match(field .. ":%s*(%d+)"))
end

--- How many descriptors the process has open.
function S.fd_count(pid)
  local p = io.popen(clean("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l"))
  local n = tonumber(p:read("a"))
  p:close()
  return n
end

--- Runs a shell command (without the sanitizer preload) and returns its standard output.
S.capture = helper.capture

S.q = q

return S
