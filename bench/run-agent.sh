#!/usr/bin/env bash
# Agent benchmark: what palisade adds to an agent's tool-calling round beside a plain
# completion. Starts, on loopback only, the mock upstream in agent mode (a request that
# declares tools and ends with a user message gets a tool call; any other, a fixed
# 400-character answer), a bare pass-through proxy, and palisade (embedded store, one
# logged-in user), then drives each with wrk and prints one table with palisade's CPU
# time per request (from /proc) and the ratio to a plain completion.
#
# Rows: a plain completion; an agent's two rounds (5 tools declared: round 1 gets the
# tool call, round 2 sends the tool result and gets the answer), stateless; the same
# two rounds streamed; and one request with palisade's own search_documents tool
# (rag.tool = true: two upstream calls, one search, inside one request).
#
# Usage: bench/run-agent.sh [seconds-per-run]   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-8}
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --bin palisade --example mock_upstream --example passthrough_proxy
T=target/release
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

MOCK_STRICT=0 MOCK_AGENT=1 MOCK_ANSWER_CHARS=400 $T/examples/mock_upstream 127.0.0.1:9100 >/dev/null & pids+=($!)
$T/examples/passthrough_proxy 127.0.0.1:9200 http://127.0.0.1:9100 >/dev/null & pids+=($!)
export PALISADE_LLM__BASE_URL=http://127.0.0.1:9100/v1 PALISADE_LLM__MODEL=mock-model
export PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE=100000000 PALISADE_LOG__LEVEL=warn
export PALISADE_EMBEDDINGS__KIND=none

start_palisade() { # port dir [extra env...]
  local port=$1 dir=$2; shift 2
  echo "bench-password-123" | env "$@" $T/palisade --data-dir "$dir" user add bench --roles employee --tenant acme --password-stdin >/dev/null
  env "$@" $T/palisade --data-dir "$dir" serve --listen 127.0.0.1:"$port" >"$dir/out" 2>"$dir/log" & pids+=($!)
  until grep -q "listening" "$dir/out" 2>/dev/null; do sleep 0.01; done
}
mkdir -p "$WORK/plain" "$WORK/tool"
start_palisade 9300 "$WORK/plain"
PAL=${pids[-1]}
start_palisade 9301 "$WORK/tool" PALISADE_RAG__TOOL=true PALISADE_RAG__WRITER_ROLES='["employee"]'
PAL_TOOL=${pids[-1]}
token() {
  curl -s -X POST "127.0.0.1:$1/auth/login" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-password-123"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])'
}
TOKEN=$(token 9300)
TOKEN_TOOL=$(token 9301)
# One public document for the search tool to find.
curl -s -o /dev/null -X POST 127.0.0.1:9301/v1/documents -H "prefer: wait=25" -H "authorization: Bearer $TOKEN_TOOL" \
  -H 'content-type: application/json' -d '{"title":"Travel policy","text":"Flights under six hours are booked in economy through the travel desk.","acl":{"public":true}}' || true

eval "$(python3 - <<'PY'
import json, shlex
tools = [{"type": "function", "function": {"name": n, "description": d,
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "date": {"type": "string"}},
                         "required": ["city"]}}}
         for n, d in [("get_weather", "Current weather in a city"), ("get_forecast", "Forecast for a date"),
                      ("book_flight", "Book a flight"), ("find_hotel", "Find a hotel"),
                      ("convert_currency", "Convert an amount between currencies")]]
user = {"role": "user", "content": "What is the weather in Paris, and should I book a flight?"}
system = {"role": "system", "content": "You are a travel assistant. Use the tools."}
call = {"id": "call_bench", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
r1 = {"model": "mock-model", "messages": [system, user], "tools": tools, "tool_choice": "auto"}
r2 = {"model": "mock-model", "messages": [system, user, {"role": "assistant", "content": None, "tool_calls": [call]},
      {"role": "tool", "tool_call_id": "call_bench", "content": "18 degrees and sunny in Paris"}], "tools": tools}
plain = {"model": "mock-model", "messages": [system, user]}
for name, body in [("PLAIN", plain), ("PLAINS", dict(plain, stream=True)), ("ROUND1", r1), ("ROUND2", r2),
                   ("ROUND1S", dict(r1, stream=True)), ("ROUND2S", dict(r2, stream=True))]:
    print(f"{name}={shlex.quote(json.dumps(body))}")
PY
)"
# rag.tool on: palisade offers search_documents, the mock calls it, palisade searches
# (one public document) and asks again: two upstream calls inside one request.
SEARCH=$PLAIN

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
run() { # name url body token conc pid
  local out before after reqs cpu
  before=$(cpu_ticks "${6:-$PAL}")
  out=$(BODY="$3" TOKEN="$4" wrk -t"$([ "$5" -gt 1 ] && echo 2 || echo 1)" -c"$5" -d"${DUR}s" \
        -s bench/post.lua "$2" 2>&1 | grep RESULT | sed 's/RESULT //')
  after=$(cpu_ticks "${6:-$PAL}")
  reqs=$(echo "$out" | sed -E 's/.*rps=([0-9.]+).*/\1/' | awk -v d="$DUR" '{print $1*d}')
  cpu=-
  if [[ "$2" == *930* ]]; then
    cpu=$(awk -v a="$after" -v b="$before" -v r="$reqs" -v t="$TCK" 'BEGIN{ if (r>0) printf "%.0f", (a-b)/t*1e6/r; else print "-" }')
  fi
  LAST_CPU=$cpu
  printf '| %-46s | %4s | %s | cpu_us_per_req=%s |\n' "$1" "$5" "$out" "$cpu"
}
echo "| target | conc | results | palisade CPU |"
echo "|---|---|---|---|"
declare -A CPU
for c in 1 32; do
  run "mock directly, agent round 1" http://127.0.0.1:9100/v1/chat/completions "$ROUND1" "" $c
  run "bare pass-through, agent round 1" http://127.0.0.1:9200/v1/chat/completions "$ROUND1" "" $c
  run "palisade plain completion" http://127.0.0.1:9300/v1/chat/completions "$PLAIN" "$TOKEN" $c; CPU[plain$c]=$LAST_CPU
  run "palisade agent round 1 (5 tools -> tool call)" http://127.0.0.1:9300/v1/chat/completions "$ROUND1" "$TOKEN" $c; CPU[r1$c]=$LAST_CPU
  run "palisade agent round 2 (tool result -> answer)" http://127.0.0.1:9300/v1/chat/completions "$ROUND2" "$TOKEN" $c; CPU[r2$c]=$LAST_CPU
  run "palisade plain completion, streamed" http://127.0.0.1:9300/v1/chat/completions "$PLAINS" "$TOKEN" $c; CPU[plains$c]=$LAST_CPU
  run "palisade agent round 1, streamed" http://127.0.0.1:9300/v1/chat/completions "$ROUND1S" "$TOKEN" $c; CPU[r1s$c]=$LAST_CPU
  run "palisade agent round 2, streamed" http://127.0.0.1:9300/v1/chat/completions "$ROUND2S" "$TOKEN" $c; CPU[r2s$c]=$LAST_CPU
  run "palisade search_documents loop (2 calls)" http://127.0.0.1:9301/v1/chat/completions "$SEARCH" "$TOKEN_TOOL" $c "$PAL_TOOL"
done
for c in 1 32; do
  awk -v p="${CPU[plain$c]}" -v a="${CPU[r1$c]}" -v b="${CPU[r2$c]}" -v c="$c" \
    'BEGIN{ printf "conc %s: agent round CPU / plain completion CPU = %.2f (round 1), %.2f (round 2)\n", c, a/p, b/p }'
  awk -v p="${CPU[plains$c]}" -v a="${CPU[r1s$c]}" -v b="${CPU[r2s$c]}" -v c="$c" \
    'BEGIN{ printf "conc %s: streamed agent round CPU / streamed plain completion CPU = %.2f (round 1), %.2f (round 2)\n", c, a/p, b/p }'
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
