-- app:static never serves what lies outside its root: ".." in every spelling, encoded
-- slashes, NUL bytes, symbolic links that lead out (files and directories), FIFOs; the
-- answer is 404 (or 400 from the core for a NUL) and never the file. Links that stay inside
-- the root work. Raw request lines, so nothing normalises the path on the way.
local srv = require "luasrv"
local H = require "http_helper"
local S = require "static_helper"

-- The same checks with openat2(RESOLVE_BENEATH) and with the fallback that resolves links
-- itself (kernels before 5.6, other systems, sandboxes that filter the call).
local function suite(title, start)
describe(title, function()
  local server, port, root

  setup(function()
    server, port, root = start()
  end)

  teardown(function()
    if server then server:cleanup() end
    S.remove_tree(root)
  end)

  after_each(function()
    if server.status == nil then
      assert.is_true(server:alive(), "the server died:\n" .. server:stderr())
    end
  end)

  local function get(target) return H.exchange(port, H.get(target)) end

  local function refused(target, statuses)
    local r = get(target)
    assert.falsy(r.body:find(S.SECRET, 1, true), target .. " served the secret")
    assert.is_true((statuses or { [404] = true })[r.status] == true,
      ("%s: status %d"):format(target, r.status))
    return r
  end

  it("refuses .. that climbs out of the root, however it is spelt", function()
    srv.run(function()
      local targets = {
        "/../secret.txt", "/../../secret.txt", "/sub/../../secret.txt", "/./../secret.txt",
        "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/.%2e/secret.txt", "/%2e./secret.txt",
        "/..%2fsecret.txt", "/..%2Fsecret.txt", "/%2e%2e%2fsecret.txt", "/sub%2f..%2f..%2fsecret.txt",
        "/..//secret.txt", "//../secret.txt", "/sub/..%2f..%2fsecret.txt",
        "/plain/../secret.txt", "/plain/%2e%2e/secret.txt", "/plain/..%2fsecret.txt",
        "/../outside/secret2.txt", "/..%5csecret.txt",
      }
      for _, target in ipairs(targets) do
        local r = refused(target)
        -- the "/" mount answers with its not_found page, never a listing or the file
        if not target:find("^/plain") then
          assert.equal("<h1>custom not found page</h1>\n", r.body, target)
        end
      end
    end)
  end)

  it("redirects a directory to its normalised path, never to another host", function()
    srv.run(function()
      local cases = {
        ["/sub"] = "/sub/", ["//sub"] = "/sub/", ["///sub"] = "/sub/", ["/sub/./"] = nil,
        ["//evil.com/.."] = "/", ["/\\evil.com/.."] = "/", ["//evil.com/../sub"] = "/sub/",
        ["/%2fevil.com/.."] = false, ["/plain//sub"] = "/plain/sub/", ["/sub?x=1"] = "/sub/?x=1",
      }
      for target, want in pairs(cases) do
        local r = get(target)
        local loc = r.headers["location"]
        if want then
          assert.equal(301, r.status, target)
          assert.equal(want, loc, target)
        end
        if loc then
          assert.falsy(loc:find("^//") or loc:find("^/\\"), target .. " -> " .. loc)
        end
      end
    end)
  end)

  it("treats a file asked for as a directory as missing, however it is spelt", function()
    srv.run(function()
      for _, target in ipairs({ "/style.css/", "/style.css/.", "/sub/a.txt/.", "/sub/a.txt/x/.." }) do
        assert.equal(404, get(target).status, target)
      end
      assert.equal(200, get("/sub/./a.txt").status)
    end)
  end)

  it("resolves .. that stays inside the root", function()
    srv.run(function()
      assert.equal("in sub\n", get("/docs/../sub/a.txt").body)
      assert.equal("body { color: red }\n", get("/sub/./../style.css").body)
    end)
  end)

  it("refuses encoded slashes even where the decoded path exists", function()
    srv.run(function()
      refused("/sub%2fa.txt")
      refused("/sub%2Fa.txt")
      assert.equal("in sub\n", get("/sub/a.txt").body)
    end)
  end)

  it("answers 400 to a NUL byte in the path", function()
    srv.run(function()
      refused("/style.css%00.txt", { [400] = true })
      refused("/%00", { [400] = true })
      refused("/secret.txt%00", { [400] = true })
    end)
  end)

  it("refuses symbolic links that lead out of the root", function()
    srv.run(function()
      refused("/escape.txt")
      refused("/escape_abs.txt")
      refused("/escape_dir/secret2.txt")
      refused("/escape_dir/")
      refused("/list/escape_dir/")
      refused("/dots/escape.txt")
      refused("/nocache/escape.txt")
      refused("/nocache/escape_dir/secret2.txt")
    end)
  end)

  it("follows symbolic links that stay inside the root", function()
    srv.run(function()
      assert.equal("body { color: red }\n", get("/inside_rel.css").body)
      assert.equal("body { color: red }\n", get("/inside_abs.css").body)
      assert.equal("in sub\n", get("/sub_link/a.txt").body)
    end)
  end)

  it("does not open FIFOs or other special files", function()
    srv.run(function()
      local r = get("/fifo")
      assert.is_true(r.status == 403 or r.status == 404, "status " .. r.status)
    end)
  end)

  it("serves nothing outside the root through absolute-form targets", function()
    srv.run(function()
      refused("http://test.local/../secret.txt")
      refused("http://test.local/%2e%2e/secret.txt")
    end)
  end)

  it("goes on serving after all of that", function()
    srv.run(function()
      assert.equal(200, get("/style.css").status)
    end)
  end)

  it("stops cleanly on SIGTERM, with no sanitizer report", function()
    H.assert_clean_stop(server)
  end)
end)
end

suite("static files safety", S.start)
suite("static files safety without openat2", function() return S.start_env("LUASRV_NO_OPENAT2=1") end)

describe("a static mount on a directory that is not there", function()
  it("warns at start, naming the script's line and the directory", function()
    local C = require "conformance"
    local script = H.helper.tmpname(".lua")
    H.helper.write_file(script, 'local srv = require "luasrv"\n' ..
      'local app = srv.http.app()\n' ..
      'app:static("/", "/nonexistent/luasrv-public")\n')
    local status, _, err = C.exec({ script })
    os.remove(script)
    assert.equal(0, status, err)
    assert.matches("%[warn%] .-%.lua:3: static: /nonexistent/luasrv%-public is missing: every file below it " ..
                   "answers 404 until it exists", err)
  end)
end)
