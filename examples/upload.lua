-- File uploads: an HTML form that uploads one or more files (multipart/form-data, streamed to
-- temporary files, never whole in memory), a page listing what was uploaded, and downloads
-- served back from the upload directory with Range support (resumable downloads).
-- Run:  luasrv examples/upload.lua [port] [dir]    (default 8080, $TMPDIR/luasrv-uploads)
-- Try:  open http://127.0.0.1:8080/ in a browser
--       curl -F 'file=@/etc/hostname' http://127.0.0.1:8080/upload
--       curl -r 0-3 http://127.0.0.1:8080/files/hostname
local srv = require "luasrv"
local fs = require "luasrv.fs"

local port = tonumber(arg[1]) or 8080
local dir = arg[2] or ((os.getenv("TMPDIR") or "/tmp") .. "/luasrv-uploads")
local MAX_UPLOAD = 200 * 1024 * 1024

local ok, err, code = fs.mkdir(dir)
if not ok and code ~= "EEXIST" then error("cannot create " .. dir .. ": " .. err) end

local function html_escape(s)
  return (s:gsub('[&<>"\']', { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                               ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function url_escape(s)
  return (s:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- A name that is safe to store: letters, digits, ".", "-" and "_" only, no leading dot,
-- and not one that is taken already.
local function storage_name(filename)
  local name = filename:gsub("[^%w%.%-_]", "_"):gsub("^%.+", "")
  if name == "" then name = "upload" end
  local base, ext = name:match("^(.-)(%.[^.]*)$")
  if not base or base == "" then base, ext = name, "" end
  local candidate, n = name, 1
  while fs.stat(dir .. "/" .. candidate) do
    n = n + 1
    candidate = ("%s-%d%s"):format(base, n, ext)
  end
  return candidate
end

local function page(message)
  local rows = {}
  for _, e in ipairs(fs.list(dir) or {}) do
    if e.kind == "file" then
      rows[#rows + 1] = ('<tr><td><a href="/files/%s">%s</a></td><td>%d bytes</td><td>%s</td></tr>')
        :format(url_escape(e.name), html_escape(e.name), e.size, os.date("!%Y-%m-%d %H:%M", e.mtime))
    end
  end
  return ([[<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Uploads</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto}
td{padding:0 1rem 0 0}.msg{color:#2a7a2a}</style></head>
<body><h1>Uploads</h1>%s
<form method="post" action="/upload" enctype="multipart/form-data">
  <p><input type="file" name="file" multiple required> <button>Upload</button></p>
  <p><label>Note: <input type="text" name="note"></label></p>
</form>
<h2>Uploaded files</h2>
<table>%s</table>
%s
</body></html>
]]):format(message and ('<p class="msg">' .. html_escape(message) .. "</p>") or "",
    table.concat(rows, "\n"), #rows == 0 and "<p>None yet.</p>" or "")
end

local app = srv.http.app()

app:get("/", function(req) return page(req.query.msg) end)

app:post("/upload", function(req, res)
  -- Parts above 64 KiB go to temporary files in the upload directory's file system, so that
  -- keeping one is a rename, not a copy; whatever is not moved is removed at the end.
  local form = req:form({ tmpdir = dir, max_file_size = MAX_UPLOAD })
  local saved = {}
  for _, part in ipairs(form) do
    if part.filename then
      local name = storage_name(part.filename)
      local moved, merr = part:move(dir .. "/" .. name)
      if not moved then return 500, "could not store " .. part.filename .. ": " .. merr end
      saved[#saved + 1] = name
    end
  end
  local msg = #saved > 0 and ("saved " .. table.concat(saved, ", ")) or "no file chosen"
  if type(form.note) == "string" and form.note ~= "" then msg = msg .. " (note: " .. form.note .. ")" end
  -- Browsers get the page back by a redirect (303: a GET), so a reload does not post again.
  res:redirect("/?msg=" .. url_escape(msg), 303)
end)

-- Downloads, with Range and conditional requests. Uploaded files are other people's content:
-- they are offered as downloads (never shown inline as pages of this site) and their type is
-- not guessed by the browser.
app:static("/files", dir, {
  headers = { ["Content-Disposition"] = "attachment", ["X-Content-Type-Options"] = "nosniff" },
})

srv.http.listen({ port = port, max_body = MAX_UPLOAD }, app)
