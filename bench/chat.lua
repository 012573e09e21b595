-- wrk script for bench/run: POSTs the same ~1 KB chat request (a few messages and
-- a tools array, bench/request.json) on every request and prints one JSON line of
-- results when the run ends.
--
--   BENCH_BODY_FILE=bench/request.json \
--     wrk -t1 -c64 -d10s -s bench/chat.lua http://127.0.0.1:PORT/v1/chat/completions
--
-- Extra headers (the router's client key) are given with wrk's -H flag.
-- errors.status counts answers with a status above 399.

local path = os.getenv("BENCH_BODY_FILE") or "bench/request.json"
local f = assert(io.open(path, "rb"), "cannot open " .. path)
local body = f:read("*a"):gsub("%s+$", "")
f:close()

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = body

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"tool":"wrk","duration_s":%.6f,"requests":%d,"bytes":%d,' ..
    '"rps":%.3f,"lat_mean_ms":%.4f,"lat_p50_ms":%.4f,"lat_p90_ms":%.4f,"lat_p99_ms":%.4f,"lat_max_ms":%.4f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"errors":%d,"request_body_bytes":%d}\n',
    summary.duration / 1e6, summary.requests, summary.bytes,
    summary.requests / (summary.duration / 1e6),
    latency.mean / 1000, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.status, e.timeout,
    e.connect + e.read + e.write + e.status + e.timeout, #wrk.body))
end
