#!/usr/bin/env bash
# TCP echo benchmark: examples/echo.lua on luasrv against bench/echo_ref (plain C libuv).
#
# Requirement checked: luasrv reaches at least 0.9x the messages per second of the reference
# (50 connections, 64-byte lines, one message in flight each, server on one core).
#
#   bench/echo.sh                              # 3 runs of 2 s warm-up + 10 s measured each
#   SECONDS_PER_RUN=3 RUNS=1 bench/echo.sh     # a quick smoke run
#
# Environment (defaults): SECONDS_PER_RUN (10), WARMUP (2), RUNS (3), CONNS (50), SIZE (64),
# SERVER_CPU (0), CLIENT_CPU (1), TIMEOUT (5: loadgen fails if an answer takes longer).
# Builds Release through scripts/build, listens on 127.0.0.1 only, and stops only the
# processes it started. Exits non-zero if any run fails (loadgen error, server died).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

seconds=${SECONDS_PER_RUN:-10}
warmup=${WARMUP:-2}
runs=${RUNS:-3}
conns=${CONNS:-50}
size=${SIZE:-64}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
answer_timeout=${TIMEOUT:-5}
target=0.90

die() { echo "echo.sh: $*" >&2; exit 1; }

for tool in taskset getconf timeout awk; do
  command -v "$tool" >/dev/null || die "'$tool' is needed"
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive whole number, not '$runs'"
taskset -c "$server_cpu" true 2>/dev/null || die "cannot pin to SERVER_CPU=$server_cpu"
taskset -c "$client_cpu" true 2>/dev/null || die "cannot pin to CLIENT_CPU=$client_cpu"
[ "$server_cpu" != "$client_cpu" ] ||
  echo "echo.sh: warning: server and load generator share CPU $server_cpu" >&2
clk_tck=$(getconf CLK_TCK)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/luasrv-echo-bench.XXXXXX")
started=()   # pids this script started and has not yet reaped

cleanup() {
  local pid
  for pid in "${started[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() {   # forget <pid>: drop a reaped pid from the list
  local pid keep=()
  for pid in "${started[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
  started=("${keep[@]}")
}

echo "building (Release)..." >&2
if ! builddir=$(scripts/build release 2>"$tmp/build.log"); then
  cat "$tmp/build.log" >&2
  die "build failed"
fi
builddir="$root/$builddir"
for bin in luasrv bench/echo_ref bench/loadgen; do
  [ -x "$builddir/$bin" ] || die "$builddir/$bin was not built (is add_subdirectory(bench) in CMakeLists.txt?)"
done

# The servers, by name: server_cmd <name> sets cmd to the command; the port comes after it.
server_cmd() {
  case "$1" in
    reference) cmd=("$builddir/bench/echo_ref") ;;
    luasrv)    cmd=("$builddir/luasrv" "$root/examples/echo.lua") ;;
  esac
}
servers=(reference luasrv)

# cpu_ticks <pid>: utime + stime of a process, in clock ticks (fields 14 and 15 of
# /proc/PID/stat, counted after the parenthesised command name, which may contain spaces).
cpu_ticks() {
  local stat rest fields
  stat=$(cat "/proc/$1/stat") || return 1
  rest=${stat##*) }
  read -r -a fields <<<"$rest"
  set -- "${fields[@]}"
  echo $(( ${12} + ${13} ))
}

# stop_server <pid>: SIGTERM, up to 3 s to exit, then SIGKILL.
stop_server() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}

# run_one <server> <run>: one measured run; appends "mps p50 p99 cpu_us_per_msg" to
# $tmp/<server>.results.
run_one() {
  local name=$1 run=$2 out="$tmp/$1.$2.out" err="$tmp/$1.$2.err" lg="$tmp/$1.$2.loadgen"
  local pid port="" lpid rc=0 t0 t1 line mps p50 p99 msgs cpu cmd
  server_cmd "$name"
  taskset -c "$server_cpu" "${cmd[@]}" 0 >"$out" 2>"$err" &
  pid=$!
  started+=("$pid")
  for _ in $(seq 50); do
    port=$(sed -n 's#^listening on tcp://127\.0\.0\.1:\([0-9][0-9]*\)$#\1#p' "$out" | head -n1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    cat "$err" >&2
    stop_server "$pid"
    die "$name did not print 'listening on tcp://127.0.0.1:PORT' within 5 s"
  fi

  timeout -k 2 "$(awk -v w="$warmup" -v s="$seconds" -v t="$answer_timeout" \
                     'BEGIN { print int(w + s + 2 * t + 10) }')" \
    taskset -c "$client_cpu" "$builddir/bench/loadgen" --host 127.0.0.1 --port "$port" \
      --conns "$conns" --size "$size" --seconds "$seconds" --warmup "$warmup" \
      --timeout "$answer_timeout" >"$lg" 2>"$lg.err" &
  lpid=$!
  started+=("$lpid")
  sleep "$warmup"
  t0=$(cpu_ticks "$pid") || t0=""
  wait "$lpid" || rc=$?
  forget "$lpid"
  t1=$(cpu_ticks "$pid") || t1=""

  if [ "$rc" -ne 0 ] || [ -z "$t0" ] || [ -z "$t1" ]; then
    echo "--- loadgen (exit $rc):" >&2
    cat "$lg" "$lg.err" >&2
    echo "--- $name stderr (last 20 lines):" >&2
    tail -n 20 "$err" >&2
    kill -0 "$pid" 2>/dev/null || echo "--- $name is no longer running" >&2
    stop_server "$pid"
    die "run $run against $name failed"
  fi
  stop_server "$pid"
  [ ! -s "$lg.err" ] || sed "s/^/  [$name run $run] /" "$lg.err" >&2
  if [ -s "$err" ]; then
    echo "  [$name run $run] the server wrote $(wc -l <"$err") line(s) on stderr; first 5:" >&2
    head -n 5 "$err" | sed "s/^/    /" >&2
  fi

  line=$(head -n1 "$lg")
  read -r mps p50 p99 msgs < <(awk '{
      for (i = 1; i < NF; i++) v[$i] = $(i + 1)
      print v["messages/s:"], v["p50_us:"], v["p99_us:"], v["msgs:"] }' <<<"$line")
  cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$clk_tck" -v n="$msgs" \
          'BEGIN { printf "%.2f", (b - a) * 1e6 / hz / n }')
  printf '  run %d/%d %-9s %s  server_cpu_pct: %.0f  server_cpu_us/msg: %s\n' "$run" "$runs" \
    "$name" "$line" "$(awk -v c="$cpu" -v m="$mps" 'BEGIN { print c * m / 1e4 }')" "$cpu" >&2
  echo "$mps $p50 $p99 $cpu" >>"$tmp/$name.results"
}

# median <column> <file>: the median of one column (the mean of the middle two for an even count).
median() {
  awk -v c="$1" '{ print $c }' "$2" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "echo benchmark: $conns connections, $size-byte lines, one in flight each;" \
     "server on CPU $server_cpu, loadgen on CPU $client_cpu;" \
     "$runs run(s) of ${warmup} s warm-up + ${seconds} s measured" >&2
for run in $(seq "$runs"); do
  for name in "${servers[@]}"; do   # interleaved, so drifting background load hits both alike
    run_one "$name" "$run"
  done
done

echo
printf '%-10s %12s %8s %8s %16s\n' server messages/s p50_us p99_us server_cpu_us/msg
for name in "${servers[@]}"; do
  printf '%-10s %12.1f %8.0f %8.0f %16.2f\n' "$name" \
    "$(median 1 "$tmp/$name.results")" "$(median 2 "$tmp/$name.results")" \
    "$(median 3 "$tmp/$name.results")" "$(median 4 "$tmp/$name.results")"
done
awk -v l="$(median 1 "$tmp/luasrv.results")" -v r="$(median 1 "$tmp/reference.results")" \
    -v t="$target" -v n="$runs" 'BEGIN {
  ratio = l / r
  printf "\nratio luasrv/reference (messages/s, median of %d run(s)): %.3f  (requirement >= %.2f: %s)\n",
         n, ratio, t, (ratio >= t ? "met" : "NOT met")
}'
