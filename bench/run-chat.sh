#!/usr/bin/env bash
# Load benchmark for the chat path (issue 3). Starts, on loopback only:
#   * the mock upstream (examples/mock_upstream.rs, streaming without pauses),
#   * a bare Rust pass-through proxy in front of it (examples/passthrough_proxy.rs),
#   * palisade in front of it (embedded store, one logged-in user),
# then drives each with wrk and prints one table: requests/s, p50/p99 latency, time to
# first byte (curl, sequential) and palisade's RSS after the run.
# Usage: bench/run-chat.sh [seconds-per-run]   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --bin palisade --example mock_upstream --example passthrough_proxy
T=target/release
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

$T/examples/mock_upstream 127.0.0.1:9100 >/dev/null & pids+=($!)
$T/examples/passthrough_proxy 127.0.0.1:9200 http://127.0.0.1:9100 >/dev/null & pids+=($!)
export PALISADE_LLM__BASE_URL=http://127.0.0.1:9100/v1 PALISADE_LLM__MODEL=mock-model
export PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE=100000000 PALISADE_LOG__LEVEL=warn
# The gateway's own overhead: no documents, so retrieval costs one indexed lookup.
export PALISADE_EMBEDDINGS__KIND=none
echo "bench-password-123" | $T/palisade --data-dir "$WORK" user add bench --roles employee --tenant acme --password-stdin >/dev/null
$T/palisade --data-dir "$WORK" serve --listen 127.0.0.1:9300 >/dev/null 2>"$WORK/log" & PAL=$!; pids+=($PAL)
sleep 1
TOKEN=$(curl -s -X POST 127.0.0.1:9300/auth/login -H 'content-type: application/json' \
  -d '{"username":"bench","password":"bench-password-123"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])')

NS='{"model":"mock-model","messages":[{"role":"user","content":"Summarise our travel policy in one sentence."}]}'
ST='{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"Summarise our travel policy in one sentence."}]}'

run() { # name url body token conc
  local out
  out=$(BODY="$3" TOKEN="$4" wrk -t"$([ "$5" -gt 1 ] && echo 2 || echo 1)" -c"$5" -d"${DUR}s" -s bench/post.lua "$2" 2>&1 | grep RESULT)
  local ttfb
  ttfb=$(for _ in $(seq 1 50); do curl -s -o /dev/null -w '%{time_starttransfer}\n' -X POST "$2" \
      -H 'content-type: application/json' ${4:+-H "authorization: Bearer $4"} -d "$3"; done \
      | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int(NR/2)+1]*1000}')
  printf '%-34s %4s %s ttfb_p50_ms=%s\n' "$1" "$5" "$(echo "$out" | sed 's/RESULT //')" "$ttfb"
}

printf '%-34s %4s %s\n' "target" "conc" "results"
for c in 1 32; do
  run "mock directly (non-stream)" http://127.0.0.1:9100/v1/chat/completions "$NS" "" $c
  run "bare pass-through (non-stream)" http://127.0.0.1:9200/v1/chat/completions "$NS" "" $c
  run "palisade (non-stream, auth)" http://127.0.0.1:9300/v1/chat/completions "$NS" "$TOKEN" $c
  run "mock directly (stream)" http://127.0.0.1:9100/v1/chat/completions "$ST" "" $c
  run "palisade (stream, auth)" http://127.0.0.1:9300/v1/chat/completions "$ST" "$TOKEN" $c
done
echo "palisade RSS after the runs: $(grep VmRSS /proc/$PAL/status | awk '{print $2/1024 " MiB"}')"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
