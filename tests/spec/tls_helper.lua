--- Certificates for the TLS specs, made at test time with the openssl command (nothing secret
-- is committed): a test CA, and certificates it signs. Not a spec itself.
local helper = require "helper"

local T = {}

local function sh(cmd)
  local ok = helper.run(cmd .. " >/dev/null 2>&1")
  assert(ok, "command failed: " .. cmd)
end

local q = helper.shell_quote

--- Makes a directory with ca.pem/ca.key (a CA), and returns it with a function that issues
-- certificates: issue(name, { cn =, san =, days =, org =, self_signed = }) writes NAME.pem and
-- NAME.key and returns their paths.
function T.new_ca()
  local dir = helper.tmpname("-tls")
  sh("mkdir -p " .. q(dir))
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  sh(("cd %s && openssl req -x509 %s -keyout ca.key -out ca.pem -days 2 -subj /CN=luasrv-test-CA")
    :format(q(dir), ec))
  local ca = { dir = dir, pem = dir .. "/ca.pem" }
  function ca.issue(name, o)
    o = o or {}
    local subj = "/CN=" .. (o.cn or "localhost") .. (o.org and ("/O=" .. o.org) or "")
    local san = o.san or "DNS:localhost,IP:127.0.0.1"
    helper.write_file(dir .. "/" .. name .. ".ext", "subjectAltName=" .. san .. "\n")
    if o.self_signed then
      sh(("cd %s && openssl req -x509 %s -keyout %s.key -out %s.pem -days 2 -subj %s " ..
          "-addext subjectAltName=%s"):format(q(dir), ec, name, name, q(subj), q(san)))
    else
      sh(("cd %s && openssl req %s -keyout %s.key -out %s.csr -subj %s"):format(q(dir), ec, name,
        name, q(subj)))
      sh(("cd %s && openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial " ..
          "-out %s.pem -days %d -extfile %s.ext"):format(q(dir), name, name, o.days or 2, name))
    end
    return dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".key"
  end
  function ca.cleanup() helper.run("rm -rf " .. q(dir)) end
  return ca
end

return T
