-- wrk script for scenario d: a Datasette reader on the log while the recorder writes.
-- Cycles through a count, a faceted table page (JSON) and a canned query.
-- Output: one line "BENCHJSON {...}" like post.lua.

local paths = {
  "/log.json?sql=select+count(*)+from+inference_runs&_shape=array",
  "/log/inference_runs.json?_size=20&_facet=model&_facet=status_code&_facet=provider",
  "/log.json?sql=select+model%2C+count(*)%2C+avg(latency_ms)+from+inference_runs+group+by+model&_shape=array",
  "/log/inference_runs.json?_size=20&_sort_desc=id",
}
local i = 0

function request()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
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
