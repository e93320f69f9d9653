#!/usr/bin/env bash
# Records nginx's answers to the HTTP conformance table: starts a private nginx (Debian's,
# `scripts/setup --bench` installs it) on a free port with `location / { return 200 }`, runs
# bench/conformance.lua against it, stops it. Nothing outside a temporary directory is used.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin="$(scripts/build release 2>/dev/null)/luasrv"
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(( 20000 + RANDOM % 10000 ))
cat >"$tmp/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1;
pid $tmp/nginx.pid; error_log $tmp/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $tmp/b; proxy_temp_path $tmp/p; fastcgi_temp_path $tmp/f;
  uwsgi_temp_path $tmp/u; scgi_temp_path $tmp/s;
  server { listen 127.0.0.1:$port; location / { return 200 "ok\n"; } }
}
CONF
nginx -p "$tmp/" -e "$tmp/error.log" -c "$tmp/nginx.conf" &
pid=$!
sleep 0.5
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///') on port $port"
LUA_PATH="$root/tests/spec/?.lua;;" "$bin" "$root/bench/conformance.lua" "$port"
