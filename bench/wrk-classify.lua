-- wrk script: POST one MNIST image as JSON to the classify route and count the answers by
-- status. The body comes from the file named by WRK_BODY (written by bench/wrk-classify.sh).
local f = assert(io.open(os.getenv("WRK_BODY"), "r"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, refused, other = 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 429 then
    refused = refused + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local o, r, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    r = r + t:get("refused")
    x = x + t:get("other")
  end
  local secs = summary.duration / 1e6
  io.write(string.format(
    "answers_200=%d answers_429=%d answers_other=%d ok_per_s=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f\n",
    o, r, x, o / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000))
end
