-- wrk script: prints one machine-readable line when the run ends, for scripts/bench:
--   WRK_RESULT requests=N duration_us=N p50_us=N p99_us=N connect=N read=N write=N status=N timeout=N
-- (status: responses that were not 2xx/3xx; connect/read/write/timeout: socket errors).
-- Run:  wrk -t1 -c50 -d10s -s bench/wrk_report.lua http://127.0.0.1:8080/
-- luacheck: globals done, ignore 212
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
