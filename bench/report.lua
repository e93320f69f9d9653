-- The tables of scripts/bench, from the raw results it collects (one record per line):
--   config k=v ...                      machine key=value       version key=value
--   run <scenario> <server> <rep> <rate/s> <p50_us|-> <p99_us|-> <cpu_us/req> <errors> <client_cpu%>
--   rss <scenario> <server> <VmHWM KiB>
--   status <scenario> <server> failed|skipped <reason...>
--   idle <server> <conns> <baseline KiB> <KiB with conns> <held> <closed by server> <open_s>
--   startup <server> <median_ms> <min_ms> <max_ms> <runs>
--   balance <server> <busiest worker's requests> <total> <requests of each worker...>
-- Usage: lua5.4 bench/report.lua text|markdown RESULTS "COMMAND"
-- Each column is the median of the runs. A ratio between two servers is the median of the
-- per-run ratios: within one run the servers are measured back to back, so load on the machine
-- that drifts from run to run hits both sides of each ratio alike. Prints the tables (and, for
-- markdown, the machine and versions); exits 1 if a target that was measured is missed.
local mode, path, command = ...
assert(mode == "text" or mode == "markdown", "usage: report.lua text|markdown RESULTS COMMAND")

local config, machine, version = {}, {}, {}
local version_order = {}
local runs, rss, status, idle, startup, balance = {}, {}, {}, {}, {}, {}

local function slot(t, a, b)
  t[a] = t[a] or {}
  if b == nil then return t[a] end
  t[a][b] = t[a][b] or {}
  return t[a][b]
end

for line in io.lines(path) do
  local kind, rest = line:match("^(%S+)%s+(.*)$")
  local f = {}
  for w in (rest or ""):gmatch("%S+") do f[#f + 1] = w end
  if kind == "config" then
    for k, v in rest:gmatch("(%w[%w_]*)=(%S+)") do config[k] = v end
  elseif kind == "machine" or kind == "version" then
    local k, v = rest:match("^([%w_-]+)=(.*)$")
    if kind == "machine" then
      machine[k] = v
    else
      version[k] = v
      version_order[#version_order + 1] = k
    end
  elseif kind == "run" then
    local list = slot(runs, f[1], f[2])
    list[#list + 1] = { rep = f[3], rate = tonumber(f[4]), p50 = tonumber(f[5]), p99 = tonumber(f[6]),
                        cpu = tonumber(f[7]), errors = tonumber(f[8]), client = tonumber(f[9]) }
  elseif kind == "rss" then
    slot(rss, f[1])[f[2]] = tonumber(f[3])
  elseif kind == "status" then
    slot(status, f[1])[f[2]] = { what = f[3], reason = table.concat(f, " ", 4) }
  elseif kind == "idle" then
    idle[f[1]] = { conns = tonumber(f[2]), base = tonumber(f[3]), rss = tonumber(f[4]),
                   held = tonumber(f[5]), closed = tonumber(f[6]), open_s = tonumber(f[7]) }
  elseif kind == "balance" then
    local each = {}
    for i = 4, #f do each[#each + 1] = f[i] end
    balance[f[1]] = { busiest = tonumber(f[2]), total = tonumber(f[3]), each = each }
  elseif kind == "startup" then
    startup[f[1]] = { median = tonumber(f[2]), min = tonumber(f[3]), max = tonumber(f[4]),
                      runs = tonumber(f[5]) }
  end
end

local function median(list, key)
  local v = {}
  for _, r in ipairs(list) do
    if r[key] then v[#v + 1] = r[key] end
  end
  if #v == 0 then return nil end
  table.sort(v)
  if #v % 2 == 1 then return v[(#v + 1) // 2] end
  return (v[#v // 2] + v[#v // 2 + 1]) / 2
end

-- The median of a / b over the runs both servers made (paired by run number), the per-run
-- ratios, or nil when they share no run.
local function paired(scn, a, b, key)
  local la, lb = runs[scn] and runs[scn][a], runs[scn] and runs[scn][b]
  if not la or not lb then return nil end
  local by_rep, ratios = {}, {}
  for _, r in ipairs(lb) do by_rep[r.rep] = r[key] end
  for _, r in ipairs(la) do
    local v = by_rep[r.rep]
    if r[key] and v and v > 0 then ratios[#ratios + 1] = { q = r[key] / v } end
  end
  if #ratios == 0 then return nil end
  local list = {}
  for i, r in ipairs(ratios) do list[i] = string.format("%.2f", r.q) end
  return median(ratios, "q"), table.concat(list, " ")
end

local conns = config.conns or "50"
local peers = { "luasrv", "nginx_lua", "nginx", "node", "c_ref_lua", "c_ref" }
local scenarios = {
  { id = "pipelined", label = "GET / (Host, method), pipelined 16 deep (-c" .. conns .. ")",
    servers = peers },
  { id = "smallest", label = "smallest handler (\"hello world\"), pipelined 16 deep (-c" .. conns .. ")",
    servers = { "luasrv", "node", "c_ref_lua", "c_ref" } },
  { id = "hello", label = "GET / (Host, method) (-c" .. conns .. ")",
    servers = { "luasrv", "luasrv_log", "nginx_lua", "nginx", "node", "c_ref_lua", "c_ref" } },
  { id = "json", label = "JSON /users/:id?fields= (-c" .. conns .. ")", servers = peers },
  { id = "static", label = "1 KiB file (-c" .. conns .. ")",
    servers = { "luasrv", "luasrv_static", "nginx_lua", "nginx", "node", "c_ref_lua", "c_ref" } },
  { id = "c200", label = "GET / (Host, method), 200 connections (-c200)", servers = peers },
  { id = "gzip", label = "20 KB HTML gzipped at level 6 (-c" .. conns .. ")",
    servers = { "luasrv", "nginx", "node" } },
  { id = "https", label = "GET / over TLS, keep-alive (-c" .. conns .. ")",
    servers = { "luasrv", "nginx", "node" } },
  { id = "tls_new", label = "new TLS connection per request, full handshake (-c" .. conns .. ")",
    servers = { "luasrv", "nginx", "node" } },
  { id = "tcp_echo", label = "TCP echo, 64 B lines, 50 conns", unit = "msg",
    servers = { "luasrv", "echo_ref" } },
  { id = "udp_echo", label = "UDP echo, 64 B, 50 sockets", unit = "msg",
    servers = { "luasrv", "udp_ref_mmsg", "udp_ref" } },
  { id = "ws_echo", label = "WebSocket echo, 64 B text, 50 conns", unit = "msg",
    servers = { "luasrv", "ws_ref", "node_ws" } },
  { id = "ws_broadcast",
    label = "WebSocket broadcast, 64 B to 1,000 subscribers (rounds; latency: send to last delivery)",
    unit = "msg", servers = { "luasrv" } },
  { id = "shared_incr", label = "hello, with and without srv.shared.incr (-c" .. conns .. ")",
    servers = { "luasrv", "luasrv_incr" } },
  { id = "workers", label = "GET /, 1 and 2 workers, wrk -t2 on the same CPUs (-c" .. conns .. ")",
    servers = { "luasrv_w1", "luasrv_w2", "nginx_lua_w1", "nginx_lua_w2", "node_w1", "node_w2" } },
  { id = "redis_pipeline", label = "Redis SET+GET 64 B, 16 per round trip, 1 connection (client CPU)",
    unit = "op", servers = { "luasrv", "redis_benchmark" } },
  { id = "shortly", label = "Shortly redirect GET /<id> (GET + INCR) next to hello (-c" .. conns .. ")",
    servers = { "luasrv", "shortly", "shortly_pool" } },
  { id = "client", label = "HTTP client: keep-alive GETs to the C ref, " .. conns ..
    " at a time (CPU/request is the client's)", servers = { "luasrv_client", "wrk" } },
  { id = "proxy", label = "reverse proxy in front of the C ref, keep-alive upstream (-c" .. conns .. ")",
    servers = { "luasrv_proxy", "nginx_proxy" } },
}

local function server_label(scn, srv)
  local names = {
    luasrv = scn == "static" and "luasrv (cached in Lua)" or (scn == "shortly" and "luasrv, hello") or "luasrv",
    luasrv_log = "luasrv, access log on (to a file)",
    luasrv_static = "luasrv (app:static)",
    nginx_lua = scn == "static" and "nginx + Lua (cached in Lua)" or "nginx + Lua",
    nginx = scn == "static" and "nginx (file, sendfile)"
      or ((scn == "https" or scn == "tls_new") and "nginx ssl (return 200)")
      or (scn == "gzip" and "nginx (file, gzip on)") or "nginx (return 200)",
    node = scn == "static" and "Node.js (cached in JS)"
      or (scn == "gzip" and "Node.js (zlib.gzipSync level 6)")
      or ((scn == "https" or scn == "tls_new") and "Node.js (https)") or "Node.js (http)",
    c_ref = "C ref (libuv+llhttp)",
    luasrv_client = "luasrv client (srv.http.get)",
    wrk = "wrk -t1",
    luasrv_proxy = "luasrv (examples/proxy.lua)",
    nginx_proxy = "nginx proxy_pass + keepalive",
    c_ref_lua = "C ref + lua_pcall",
    echo_ref = "C ref (echo_ref)",
    udp_ref = "C ref (udp_echo_ref)",
    udp_ref_mmsg = "C ref (udp_echo_ref --mmsg)",
    ws_ref = "C ref (ws_echo_ref)",
    node_ws = "Node.js + ws",
    luasrv_incr = "luasrv + srv.shared.incr",
    luasrv_w1 = "luasrv --workers 1",
    luasrv_w2 = "luasrv --workers 2",
    nginx_lua_w1 = "nginx + Lua, 1 worker",
    nginx_lua_w2 = "nginx + Lua, 2 workers",
    node_w1 = "Node.js cluster, 1 worker",
    node_w2 = "Node.js cluster, 2 workers",
    redis_benchmark = "redis-benchmark -P 16 -c 1",
    shortly = "luasrv, Shortly redirect (multiplexed)",
    shortly_pool = "luasrv, Shortly redirect (pool)",
  }
  return names[srv] or srv
end

-- Medians for one scenario/server, or nil.
local function stats(scn, srv)
  local list = runs[scn] and runs[scn][srv]
  if not list or #list == 0 then return nil end
  local errors, lo, hi = 0, math.huge, -math.huge
  for _, r in ipairs(list) do
    errors = errors + (r.errors or 0)
    lo, hi = math.min(lo, r.rate), math.max(hi, r.rate)
  end
  local rate = median(list, "rate")
  return { rate = rate, spread = #list > 1 and rate > 0 and 100 * (hi - lo) / rate or nil,
           p50 = median(list, "p50"), p99 = median(list, "p99"),
           cpu = median(list, "cpu"), client = median(list, "client"), errors = errors,
           n = #list, rss = rss[scn] and rss[scn][srv] }
end

-- The C reference a scenario's ratios are taken against: the fixed-response server for HTTP,
-- echo_ref for TCP, the faster udp_echo_ref variant for UDP (the practical limit).
-- Returns its stats, its label and its server key.
local function c_ref_of(scn)
  if scn == "tcp_echo" then return stats(scn, "echo_ref"), "echo_ref", "echo_ref" end
  if scn == "ws_echo" then return stats(scn, "ws_ref"), "ws_echo_ref", "ws_ref" end
  if scn == "udp_echo" then
    local a, b = stats(scn, "udp_ref_mmsg"), stats(scn, "udp_ref")
    if a and (not b or a.rate >= b.rate) then return a, "udp_echo_ref --mmsg", "udp_ref_mmsg" end
    return b, b and "udp_echo_ref" or nil, "udp_ref"
  end
  return stats(scn, "c_ref"), "C ref", "c_ref"
end

local function fmt(v, f)
  if v == nil then return "-" end
  return string.format(f, v)
end
local function ratio(scn, a, b, key)
  local q = paired(scn, a, b, key)
  return q and string.format("%.2f", q) or "-"
end

-- ---- the main table -----------------------------------------------------------------------

local header = { "scenario", "server", "CPU us/req", "req/s", "spread %", "p50 us", "p99 us", "peak RSS MiB",
                 "errors", "client CPU %", "req/s vs nginx+Lua", "req/s vs C ref",
                 "CPU vs nginx+Lua", "CPU vs C ref" }
local rows = {}
for _, s in ipairs(scenarios) do
  if runs[s.id] or status[s.id] then
    local _, _, cref = c_ref_of(s.id)
    for _, srv in ipairs(s.servers) do
      local st = stats(s.id, srv)
      local bad = status[s.id] and status[s.id][srv]
      if st then
        rows[#rows + 1] = { s.label, server_label(s.id, srv), fmt(st.cpu, "%.2f"),
          fmt(st.rate, "%.0f"), fmt(st.spread, "%.0f"), fmt(st.p50, "%.0f"), fmt(st.p99, "%.0f"),
          fmt(st.rss and st.rss / 1024, "%.1f"), tostring(st.errors), fmt(st.client, "%.0f"),
          ratio(s.id, srv, "nginx_lua", "rate"), ratio(s.id, srv, cref, "rate"),
          ratio(s.id, srv, "nginx_lua", "cpu"), ratio(s.id, srv, cref, "cpu"),
          note = bad and (bad.what .. " after some runs: " .. bad.reason) }
      elseif bad then
        rows[#rows + 1] = { s.label, server_label(s.id, srv), bad.what .. ": " .. bad.reason,
                            span = true }
      end
    end
  end
end

-- ---- resources ----------------------------------------------------------------------------

local idle_rows = {}
for _, srv in ipairs({ "luasrv", "nginx_lua", "node", "c_ref" }) do
  local r = idle[srv]
  local bad = status.idle and status.idle[srv]
  if r then
    idle_rows[#idle_rows + 1] = { server_label("idle", srv), tostring(r.conns),
      fmt(r.base / 1024, "%.1f"), fmt(r.rss / 1024, "%.1f"),
      fmt((r.rss - r.base) / r.conns, "%.2f"), string.format("%d / %d", r.held, r.closed),
      fmt(r.open_s, "%.2f") }
  elseif bad then
    idle_rows[#idle_rows + 1] = { server_label("idle", srv), bad.what .. ": " .. bad.reason,
                                  span = true }
  end
end
local startup_rows = {}
for _, srv in ipairs({ "luasrv", "c_ref" }) do
  local r = startup[srv]
  if r then
    startup_rows[#startup_rows + 1] = { server_label("startup", srv), fmt(r.median, "%.1f"),
      fmt(r.min, "%.1f"), fmt(r.max, "%.1f"), tostring(r.runs) }
  end
end

-- ---- targets ------------------------------------------------------------------------------

local targets, missed = {}, false
local function target(what, ok, measured, why_not)
  local result
  if why_not then
    result = why_not
  elseif ok then
    result = "PASS"
  else
    result, missed = "FAIL", true
  end
  targets[#targets + 1] = { what, measured or "-", result }
end
local function not_run(scn, srv)
  local bad = status[scn] and status[scn][srv]
  if bad then return bad.what .. ": " .. bad.reason end
  return "not run"
end

-- A target on the paired ratio a/b of `key` in scenario scn: ok(ratio) decides; the medians
-- of both servers are shown beside it, formatted with `f`.
local function ratio_target(what, scn, a, b, key, ok, f)
  local sa, sb = stats(scn, a), stats(scn, b)
  if not (sa and sb) then
    return target(what, nil, nil, not_run(scn, sa and b or a))
  end
  local q, each = paired(scn, a, b, key)
  if not q then return target(what, nil, nil, "no run measured both") end
  target(what, ok(q), string.format("%.3fx (runs: %s); medians " .. f .. " vs " .. f,
                                   q, each, sa[key], sb[key]))
end

do
  -- Server CPU per request, for handlers as users write them (bench/bench_app.lua).
  local function at_most(limit) return function(q) return q <= limit end end
  ratio_target("pipelined 16, GET / (Host, method): luasrv server CPU/request <= 1.5x C ref + lua_pcall",
               "pipelined", "luasrv", "c_ref_lua", "cpu", at_most(1.5), "%.2f us")
  ratio_target("smallest handler, pipelined 16: luasrv server CPU/request <= 1.2x C ref + lua_pcall",
               "smallest", "luasrv", "c_ref_lua", "cpu", at_most(1.2), "%.2f us")
  ratio_target("GET / (Host, method), keep-alive: luasrv server CPU/request <= 1.1x C ref + lua_pcall",
               "hello", "luasrv", "c_ref_lua", "cpu", at_most(1.1), "%.2f us")
  ratio_target("GET / (Host, method), keep-alive: luasrv server CPU/request <= 0.5x Node.js's",
               "hello", "luasrv", "node", "cpu", at_most(0.5), "%.2f us")
  ratio_target("access log on (to a file): luasrv server CPU/request <= 1.1x with --quiet",
               "hello", "luasrv_log", "luasrv", "cpu", at_most(1.1), "%.2f us")
  ratio_target("gzip 20 KB: luasrv server CPU/request <= 1.0x nginx gzip on's", "gzip",
               "luasrv", "nginx", "cpu", function(q) return q <= 1.0 end, "%.2f us")
  ratio_target("HTTPS keep-alive: luasrv server CPU/request <= 1.1x nginx ssl's", "https",
               "luasrv", "nginx", "cpu", function(q) return q <= 1.1 end, "%.2f us")
  ratio_target("new TLS connections: luasrv per second >= 0.9x nginx's (full handshakes)",
               "tls_new", "luasrv", "nginx", "rate", function(q) return q >= 0.9 end, "%.0f")
  ratio_target("HTTP client: luasrv req/s >= 0.5x wrk -t1's", "client", "luasrv_client", "wrk",
               "rate", function(q) return q >= 0.5 end, "%.0f")
  ratio_target("reverse proxy: luasrv server CPU/request <= 1.0x nginx proxy_pass's", "proxy",
               "luasrv_proxy", "nginx_proxy", "cpu", function(q) return q <= 1.0 end, "%.2f us")
  ratio_target("TCP echo: luasrv msg/s >= 0.9x C echo_ref", "tcp_echo", "luasrv", "echo_ref",
               "rate", function(q) return q >= 0.9 end, "%.0f")
  ratio_target("WebSocket echo: luasrv msg/s >= 0.9x C ws_echo_ref", "ws_echo", "luasrv", "ws_ref",
               "rate", function(q) return q >= 0.9 end, "%.0f")
  ratio_target("WebSocket echo: luasrv server CPU/msg <= 0.3x Node.js + ws's", "ws_echo", "luasrv",
               "node_ws", "cpu", function(q) return q <= 0.3 end, "%.2f us")
  local wb = stats("ws_broadcast", "luasrv")
  local wb_what = "WebSocket broadcast: a message reaches 1,000 subscribers in <= 50 ms (p99 of rounds)"
  if wb then
    target(wb_what, wb.p99 <= 50000, string.format("p50 %.1f ms, p99 %.1f ms; server CPU %.0f us per broadcast",
      wb.p50 / 1000, wb.p99 / 1000, wb.cpu))
  else
    target(wb_what, nil, nil, not_run("ws_broadcast", "luasrv"))
  end
  local _, cu_name, cu_key = c_ref_of("udp_echo")
  ratio_target("UDP echo: luasrv msg/s >= 0.85x C UDP echo (" .. (cu_name or "udp_echo_ref") .. ")",
               "udp_echo", "luasrv", cu_key, "rate", function(q) return q >= 0.85 end, "%.0f")
  local li = idle.luasrv
  local idle_what = string.format("%s idle keep-alive connections: luasrv <= 1.5 KiB per connection",
                             li and tostring(li.conns) or "10000")
  if li then
    local per = (li.rss - li.base) / li.conns
    target(idle_what, per <= 1.5 and li.conns >= 10000,
           string.format("%.2f KiB (%.1f MiB with them, %.1f MiB before)%s", per, li.rss / 1024,
                         li.base / 1024,
                         li.conns < 10000 and "; fewer than 10000 connections: not the target" or ""))
  else
    target(idle_what, nil, nil, not_run("idle", "luasrv"))
  end
  ratio_target("srv.shared.incr in a handler: server CPU/request <= 1.1x the same route without it",
               "shared_incr", "luasrv_incr", "luasrv", "cpu", function(q) return q <= 1.1 end,
               "%.2f us")
  ratio_target("Redis pipelined SET/GET: one luasrv task's ops/s >= 0.7x redis-benchmark -P 16 -c 1",
               "redis_pipeline", "luasrv", "redis_benchmark", "rate", function(q) return q >= 0.7 end,
               "%.0f")
  ratio_target("Shortly redirect (GET + INCR, multiplexed): server CPU/request <= 2x hello's",
               "shortly", "shortly", "luasrv", "cpu", function(q) return q <= 2 end, "%.2f us")
  local pq, peach = paired("shortly", "shortly_pool", "luasrv", "cpu")
  target("Shortly redirect (GET + INCR, a pooled connection per request): server CPU/request / hello's"
         .. " (reported)", nil, pq and string.format("%.2fx (runs: %s)", pq, peach),
         pq and "measured" or not_run("shortly", "shortly_pool"))
  -- Scaling is reported, not judged: two workers on a machine whose cores wrk shares.
  for _, pair in ipairs({ { "luasrv", "luasrv_w2", "luasrv_w1" },
                          { "nginx + Lua", "nginx_lua_w2", "nginx_lua_w1" },
                          { "Node.js cluster", "node_w2", "node_w1" } }) do
    local what = pair[1] .. ": req/s with 2 workers / with 1 (reported)"
    local q, each = paired("workers", pair[2], pair[3], "rate")
    local a, b = stats("workers", pair[2]), stats("workers", pair[3])
    if q then
      target(what, nil, string.format("%.2fx (runs: %s); medians %.0f vs %.0f", q, each, a.rate,
                                      b.rate), "measured")
    else
      target(what, nil, nil, not_run("workers", a and pair[3] or pair[2]))
    end
  end
  local bl = balance.luasrv_w2
  local bwhat = "balance over 10,000 new connections, --workers 2: busiest worker <= 60%"
  if bl then
    target(bwhat, bl.busiest / bl.total <= 0.6,
           string.format("%.1f%% (requests per worker: %s)", 100 * bl.busiest / bl.total,
                         table.concat(bl.each, " / ")))
  else
    target(bwhat, nil, nil, not_run("balance", "luasrv_w2"))
  end
  local ls = startup.luasrv
  if ls then
    target("startup to the first 'listening' line < 50 ms (median)", ls.median < 50,
           string.format("%.1f ms (median of %d)", ls.median, ls.runs))
  else
    target("startup to the first 'listening' line < 50 ms (median)", nil, nil,
           not_run("startup", "luasrv"))
  end
end

-- ---- output -------------------------------------------------------------------------------

local out = {}
local function emit(s) out[#out + 1] = s end

local function markdown_table(head, body, align)
  emit("| " .. table.concat(head, " | ") .. " |")
  local sep = {}
  for i = 1, #head do sep[i] = (align and align[i] == "l") and "---" or "---:" end
  emit("|" .. table.concat(sep, "|") .. "|")
  for _, r in ipairs(body) do
    local cells = {}
    for i = 1, #head do cells[i] = r[i] or "" end
    if r.span then
      for i = #r + 1, #head do cells[i] = "" end
    end
    if r.note then cells[2] = cells[2] .. " (" .. r.note .. ")" end
    emit("| " .. table.concat(cells, " | ") .. " |")
  end
end

local function text_table(head, body, first_left)
  local width = {}
  for i, h in ipairs(head) do width[i] = #h end
  for _, r in ipairs(body) do
    if not r.span then
      for i = 1, #head do width[i] = math.max(width[i], #(r[i] or "")) end
    end
  end
  local function line(cells, upto)
    local parts = {}
    for i = 1, upto or #head do
      local c = cells[i] or ""
      if i <= first_left then
        parts[i] = c .. string.rep(" ", width[i] - #c)
      else
        parts[i] = string.rep(" ", width[i] - #c) .. c
      end
    end
    return (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  emit(line(head))
  for _, r in ipairs(body) do
    if r.span and #r == 1 then
      emit(r[1])
    elseif r.span then
      emit(line(r, #r - 1) .. "  " .. r[#r])
    else
      emit(line(r) .. (r.note and ("  [" .. r.note .. "]") or ""))
    end
  end
end

if mode == "markdown" then
  emit("Measured " .. os.date("!%Y-%m-%d %H:%M UTC") .. " with `" .. command .. "`: " ..
       (config.runs or "?") .. " run(s) of " .. (config.seconds or "?") .. " s after " ..
       (config.warmup or "?") .. " s of warm-up, medians; servers on CPU " ..
       (config.server_cpu or "0") .. ", clients on CPU " .. (config.client_cpu or "1") .. ".")
  emit("")
  emit("- Machine: " .. (machine.nproc or "?") .. " CPUs, " .. (machine.cpu or "?") .. "; " ..
       (machine.kernel or "?") .. "; " .. (machine.os or "?"))
  emit("- Load average (1, 5, 15 min) before / after: " .. (machine.loadavg_start or "?") ..
       " / " .. (machine.loadavg_end or "?"))
  local v = {}
  for _, k in ipairs(version_order) do v[#v + 1] = k .. " " .. version[k] end
  emit("- Versions: " .. table.concat(v, "; "))
  emit("")
  emit("#### Throughput, latency and cost per request")
  emit("")
  markdown_table(header, rows, { "l", "l" })
  emit("")
  emit("#### Resources")
  emit("")
  if #idle_rows > 0 then
    markdown_table({ "idle keep-alive connections", "connections", "RSS before MiB",
                     "RSS with them MiB", "KiB per connection", "held / closed by server",
                     "open time s" }, idle_rows, { "l" })
    emit("")
  end
  if #startup_rows > 0 then
    markdown_table({ "startup (exec to 'listening')", "median ms", "min ms", "max ms", "runs" },
                   startup_rows, { "l" })
    emit("")
  end
  emit("#### Targets")
  emit("")
  markdown_table({ "target", "measured", "result" }, targets, { "l", "l", "l" })
else
  emit(string.format("luasrv benchmarks: %s run(s) of %s s after %s s warm-up, medians; %s",
                     config.runs or "?", config.seconds or "?", config.warmup or "?",
                     machine.cpu or ""))
  emit("")
  local current
  local grouped = {}
  for _, r in ipairs(rows) do
    if r[1] ~= current then
      current = r[1]
      grouped[#grouped + 1] = { r[1], span = true }
    end
    local copy = { table.unpack(r, 2) }
    copy[1] = "  " .. copy[1]
    copy.span, copy.note = r.span, r.note
    grouped[#grouped + 1] = copy
  end
  local h = { table.unpack(header, 2) }
  text_table(h, grouped, 1)
  if #idle_rows > 0 then
    emit("")
    text_table({ "idle keep-alive", "conns", "RSS before MiB", "RSS with MiB", "KiB/conn",
                 "held/closed", "open s" }, idle_rows, 1)
  end
  if #startup_rows > 0 then
    emit("")
    text_table({ "startup", "median ms", "min ms", "max ms", "runs" }, startup_rows, 1)
  end
  emit("")
  text_table({ "target", "measured", "result" }, targets, 3)
end
print(table.concat(out, "\n"))
os.exit(missed and 1 or 0)
