--- MIME types by file name extension.
-- The system's list (/etc/mime.types, from Debian's media-types package) is read once, on
-- first use; a small built-in table covers the common web types where that file is missing.
--   local mime = require "luasrv.mime"
--   mime.type_of("site.css")        --> "text/css"
--   mime.content_type("site.css")   --> "text/css; charset=utf-8"
local lower, match, gmatch, open = string.lower, string.match, string.gmatch, io.open

local M = {}

--- The type of a name without a known extension.
M.default = "application/octet-stream"

--- Where the system's list is read from (change it before the first lookup to read another).
M.path = "/etc/mime.types"

local BUILTIN = {
  html = "text/html", htm = "text/html", css = "text/css", js = "text/javascript",
  mjs = "text/javascript", json = "application/json", txt = "text/plain", csv = "text/csv",
  md = "text/markdown", xml = "application/xml", svg = "image/svg+xml", png = "image/png",
  jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif", webp = "image/webp",
  avif = "image/avif", ico = "image/vnd.microsoft.icon", pdf = "application/pdf",
  wasm = "application/wasm", woff = "font/woff", woff2 = "font/woff2", ttf = "font/ttf",
  otf = "font/otf", mp3 = "audio/mpeg", ogg = "audio/ogg", wav = "audio/wav", mp4 = "video/mp4",
  webm = "video/webm", zip = "application/zip", gz = "application/gzip",
  tar = "application/x-tar", webmanifest = "application/manifest+json",
}

-- Types that are text whatever their top-level name says: they get a charset.
local TEXTUAL = {
  ["application/json"] = true, ["application/javascript"] = true, ["application/xml"] = true,
  ["application/manifest+json"] = true, ["image/svg+xml"] = true,
}

local types        -- extension (lower case) -> type, once loaded
local content_types = {} -- extension -> Content-Type value, built as asked for

--- Reads a mime.types file ("type ext1 ext2 ...", # comments) into `into`. Returns the number
-- of extensions read, or nil and a message when the file cannot be opened.
function M.read(path, into)
  local f, err = open(path, "r")
  if not f then return nil, err end
  local n = 0
  for line in f:lines() do
    local t, exts = match(line, "^%s*([^#%s]+)%s+([^#]+)")
    if t then
      for ext in gmatch(exts, "%S+") do
        into[lower(ext)] = lower(t)
        n = n + 1
      end
    end
  end
  f:close()
  return n
end

local function load()
  types = {}
  for ext, t in pairs(BUILTIN) do types[ext] = t end
  M.read(M.path, types)
  return types
end

--- The type for an extension ("css", without the dot; any case), or nil.
function M.lookup(ext)
  return (types or load())[lower(ext)]
end

--- The type for a file name, by its extension (M.default if there is none or it is unknown).
function M.type_of(name)
  local ext = match(name, "%.([^./]+)$")
  return ext and M.lookup(ext) or M.default
end

--- The Content-Type value for a file name: the type, with "; charset=utf-8" for text.
function M.content_type(name)
  local ext = match(name, "%.([^./]+)$") or ""
  local ct = content_types[ext]
  if ct then return ct end
  local t = ext ~= "" and M.lookup(ext)
  if not t then return M.default end
  if match(t, "^text/") or TEXTUAL[t] then t = t .. "; charset=utf-8" end
  content_types[ext] = t -- only known extensions: the cache stays as small as the list
  return t
end

return M
