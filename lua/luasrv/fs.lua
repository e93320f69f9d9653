--- A few file system calls luasrv's own modules use, for scripts too (src/fs.c). They are
-- synchronous, like io.open: fine for the small, local operations they are meant for.
--   local fs = require "luasrv.fs"
--   fs.mkdir("/srv/uploads")                       --> true | nil, message, code
--   fs.stat("/srv/uploads")                        --> "directory", size, mtime
--   for _, e in ipairs(fs.list("/srv/uploads")) do print(e.name, e.kind, e.size) end
local core = require "luasrv.core"

local fs = core.fs

local M = {}

--- fs.stat(path) -> kind ("file", "directory" or "other"), size, mtime (seconds) | nil,
-- message, code. Symbolic links are followed.
M.stat = fs.stat

--- fs.mkdir(path [, mode]) -> true | nil, message, code (code "EEXIST" if something is
-- there already). mode defaults to 0755 (before the umask).
M.mkdir = fs.mkdir

--- fs.chmod(path [, mode]) -> true | nil, message, code. mode defaults to what a newly
-- created file gets: 0666 less the umask (0644 with the usual umask 022).
M.chmod = fs.chmod

--- fs.list(path) -> a list of { name, kind, size, mtime } sorted by name, without "." and
-- ".." | nil, message, code.
function M.list(path)
  return fs.root(path):list(".")
end

return M
