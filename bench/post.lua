-- wrk script: POST a chat completion with an optional bearer token.
-- Env: BODY (JSON), TOKEN (bearer, optional), THREADS (comma-separated thread ids,
-- optional: each request goes to the next one as X-Palisade-Thread).
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

local threads = {}
for id in string.gmatch(os.getenv("THREADS") or "", "[^,]+") do
  table.insert(threads, id)
end
local n = 0

request = function()
  if #threads == 0 then
    return wrk.format()
  end
  n = n + 1
  wrk.headers["X-Palisade-Thread"] = threads[(n % #threads) + 1]
  return wrk.format()
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
