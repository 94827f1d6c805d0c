-- The loaded side of tests/benchmarks/enqueue.py, for wrk (one thread): every request a new prompt, so no two
-- jobs are alike; `done` prints one JSON line, which the benchmark reads.
local round, n = "0", 0

function init(args)
  round = args[1] or "0"
end

function request()
  n = n + 1
  local body = string.format('{"prompt": "a purple cat with a red hat, loaded %s %d", "seed": %d}', round, n, n)
  return wrk.format("POST", "/v1/jobs", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
