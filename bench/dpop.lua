-- wrk script: POST a chat completion with a DPoP-bound token, a fresh proof per request.
-- Env: BODY (JSON), TOKEN (the bound access token), SCHEME (default DPoP), PROOFS (a file of proofs, one per
-- line, each used once), WRK_THREADS (wrk's -t: thread i takes lines i, i+t, i+2t, …).
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
-- SCHEME=Bearer sends the same proofs beside a bearer token (which the server does not
-- check them for): the control row, with the client's work and the request size equal.
wrk.headers["Authorization"] = (os.getenv("SCHEME") or "DPoP") .. " " .. os.getenv("TOKEN")

local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local nt = tonumber(os.getenv("WRK_THREADS"))
  proofs = {}
  local i = 0
  for line in io.lines(os.getenv("PROOFS")) do
    if i % nt == id then
      table.insert(proofs, line)
    end
    i = i + 1
  end
  n = 0
end

request = function()
  n = n + 1
  wrk.headers["DPoP"] = proofs[n]
  return wrk.format()
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
