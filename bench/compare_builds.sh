#!/usr/bin/env bash
# Compares the server CPU per request of two luasrv binaries (say, before and after a
# change) on examples/hello_http.lua, alternating them round by round: hello with 50
# keep-alive connections and the same pipelined 16 deep (bench/wrk_pipeline.lua). Server on
# CPU 0, wrk on CPU 1, 4 s per run after a 1 s warm-up.
#   bench/compare_builds.sh OLD_BINARY NEW_BINARY [ROUNDS]     (default 4 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 rounds=${3:-4}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
measure() { # binary mode -> microseconds of server CPU per request
  local bin=$1 mode=$2 pid port t0 t1 req script=()
  taskset -c 0 "$bin" --quiet examples/hello_http.lua 0 >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 50); do port=$(grep -o '[0-9]*$' "$out" | head -n1 || true); [ -n "$port" ] && break; sleep 0.1; done
  [ "$mode" = pipelined ] && script=(-s bench/wrk_pipeline.lua)
  taskset -c 1 wrk -t1 -c50 -d1s "${script[@]}" "http://127.0.0.1:$port/" >/dev/null 2>&1
  t0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  req=$(taskset -c 1 wrk -t1 -c50 -d4s "${script[@]}" "http://127.0.0.1:$port/" 2>&1 | awk '/requests in/ { print $1 }')
  t1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v t=$(( t1 - t0 )) -v hz="$(getconf CLK_TCK)" -v r="$req" 'BEGIN { printf "%.3f", t * 1e6 / hz / r }'
}
for mode in hello pipelined; do
  for r in $(seq "$rounds"); do
    a=$(measure "$old" "$mode"); b=$(measure "$new" "$mode")
    echo "$mode round $r: old $a us/req, new $b us/req, new/old $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')"
  done
done
