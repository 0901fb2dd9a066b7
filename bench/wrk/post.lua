-- wrk script for the benchmark: POST one JSON body, print a machine-readable summary.
--
-- Environment:
--   BENCH_BODY        the request body; "#N#" in it is replaced per request (see below)
--   BENCH_RUN_ID      a prefix that makes the bodies of this run unique
--   BENCH_AUTH        optional bearer token (sent as "Authorization: Bearer ...")
--   BENCH_HEADERS     optional extra request headers, "Name: value" lines (Portkey routes by them)
--   BENCH_STOP_AFTER  optional: stop after this many responses (wrk -t1 only; the
--                     requests in flight at that moment are abandoned)
--   BENCH_DELAY_MS    optional: each connection waits this long on average before each request,
--                     so that the load is paced below what the server can take (latency is timed
--                     from the request's write, after the wait). The waits are drawn from an
--                     exponential distribution, as the gaps between independent clients' calls
--                     are: a fixed wait lets the connections fall into step, so that they arrive
--                     together, in bursts of 32, and the p99 measures the burst, not the proxy
-- Output: one line "BENCHJSON {...}" with counts, errors and latency percentiles (µs).

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"model":"bench-model","messages":[{"role":"user","content":"hi #N#"}]}'
wrk.headers["Content-Type"] = "application/json"

-- Every request is made unique: "#N#" in the body becomes "<BENCH_RUN_ID>-<counter>", so
-- no proxy can answer from a cache or merge identical concurrent requests (ours does the
-- latter by default): each request really goes upstream, as with real traffic.
local cut = wrk.body:find("#N#", 1, true)
if cut then
  local prefix, suffix = wrk.body:sub(1, cut - 1), wrk.body:sub(cut + 3)
  local run = (os.getenv("BENCH_RUN_ID") or tostring(os.time())) .. "-"
  local counter = 0
  function request()
    counter = counter + 1
    return wrk.format(nil, nil, nil, prefix .. run .. counter .. suffix)
  end
end
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then
    wrk.headers[name] = value
  end
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms then
  math.randomseed(os.time())
  function delay()
    return math.floor(-math.log(1 - math.random()) * delay_ms + 0.5)
  end
end

local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "")
if stop_after then
  local seen = 0
  function response(status, headers, body)
    seen = seen + 1
    if seen == stop_after then
      -- wrk's main thread sleeps for the whole -d duration: tell the harness, which
      -- interrupts that sleep with SIGINT, and stop this thread's event loop.
      io.write("BENCHSTOPPED\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
