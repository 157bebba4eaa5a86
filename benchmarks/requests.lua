-- wrk script: POST the pre-generated requests in $BENCH_REQUESTS in order, one per line as
-- "<path>\t<body>". With several threads, thread i sends lines i, i+n, i+2n... so no two
-- threads send the same body (WS-Security nonces are accepted once). A thread that runs
-- out of lines starts over and counts it in "wrapped" (the relay then rejects the replays
-- as status errors). $BENCH_LIMIT > 0 stops each thread after that many responses (wrk
-- itself still ends only when its duration is up).
-- done() prints one line "BENCH_JSON {...}" for benchmarks/common.py.

local threads = {}
local requests = {}
local index = 0
local responses = 0
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
wrapped = 0

function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  local count = tonumber(os.getenv("BENCH_THREADS") or "1")
  local content_type = os.getenv("BENCH_CONTENT_TYPE") or "application/soap+xml; charset=utf-8"
  local headers = {["Content-Type"] = content_type}
  local line_number = 0
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    if line_number % count == id then
      local tab = line:find("\t", 1, true)
      requests[#requests + 1] = wrk.format("POST", line:sub(1, tab - 1), headers, line:sub(tab + 1))
    end
    line_number = line_number + 1
  end
end

function request()
  index = index + 1
  if index > #requests then
    index = 1
    wrapped = wrapped + 1
  end
  return requests[index]
end

if limit > 0 then
  function response(status, headers, body)
    responses = responses + 1
    if responses >= limit then
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local wraps = 0
  for _, thread in ipairs(threads) do
    wraps = wraps + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "wrapped": %d, ' ..
    '"latency_us": {"mean": %.1f, "stdev": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout, wraps,
    latency.mean, latency.stdev, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
