#!/usr/bin/env bash
# Load benchmark for the chat path. Starts, on loopback only:
#   * the mock upstream (examples/mock_upstream.rs: a fixed 400-character answer,
#     streamed without pauses),
#   * a bare Rust pass-through proxy in front of it (examples/passthrough_proxy.rs),
#   * palisade in front of it (embedded store, one logged-in user),
# then drives each with wrk and prints one table: requests/s, p50/p99 latency, errors,
# palisade's CPU time per request (from /proc), and time to first byte (curl, sequential).
#
# Rows: the stateless completion, the thread-bound persisted turn (X-Palisade-Thread,
# spread over 32 threads), and a thread-length scan (turns in threads that already hold
# 10, 1,000 and 5,000 messages). Ends with palisade's peak RSS.
#
# Usage: bench/run-chat.sh [seconds-per-run]   (needs wrk: apt-get install wrk)
# Every process it starts is stopped by PID on exit.
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

# A realistic answer (400 characters, streamed in 16-character deltas) instead of the
# echo of the prompt, which would grow with the stored history.
MOCK_STRICT=0 MOCK_ANSWER_CHARS=400 $T/examples/mock_upstream 127.0.0.1:9100 >/dev/null & pids+=($!)
$T/examples/passthrough_proxy 127.0.0.1:9200 http://127.0.0.1:9100 >/dev/null & pids+=($!)
export PALISADE_LLM__BASE_URL=http://127.0.0.1:9100/v1 PALISADE_LLM__MODEL=mock-model
export PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE=100000000 PALISADE_LOG__LEVEL=warn
export PALISADE_THREADS__MAX_MESSAGES_PER_THREAD=100000000 PALISADE_THREADS__MAX_THREADS_PER_USER=100000
# The gateway's own overhead: no documents, so retrieval costs one indexed lookup.
export PALISADE_EMBEDDINGS__KIND=none
echo "bench-password-123" | $T/palisade --data-dir "$WORK" user add bench --roles employee --tenant acme --password-stdin >/dev/null
START=$(date +%s%N)
$T/palisade --data-dir "$WORK" serve --listen 127.0.0.1:9300 >"$WORK/out" 2>"$WORK/log" & PAL=$!; pids+=($PAL)
until grep -q "listening" "$WORK/out" 2>/dev/null; do sleep 0.01; done
echo "palisade start-up to listening: $(( ($(date +%s%N) - START) / 1000000 )) ms"
TOKEN=$(curl -s -X POST 127.0.0.1:9300/auth/login -H 'content-type: application/json' \
  -d '{"username":"bench","password":"bench-password-123"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])')

threads() { # count -> comma-separated new thread ids
  local ids=()
  for _ in $(seq 1 "$1"); do
    ids+=("$(curl -s -X POST 127.0.0.1:9300/v1/threads -H "authorization: Bearer $TOKEN" \
      -H 'content-type: application/json' -d '{}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')")
  done
  (IFS=,; echo "${ids[*]}")
}
HOT=$(threads 32)
declare -A SCAN
for len in 10 1000 5000; do
  SCAN[$len]=$(threads 32)
  # shellcheck disable=SC2086
  python3 bench/fill_threads.py "$WORK/palisade.db" "$len" ${SCAN[$len]//,/ }
done

NS='{"model":"mock-model","messages":[{"role":"user","content":"Summarise our travel policy in one sentence."}]}'
# A stateless call carrying a client-sent history as long as a thread's stored one (the
# 3,000-token budget): the same prompt size, so the difference is the cost of persistence.
NSH=$(python3 -c '
import json
answer = ("The travel policy books flights under six hours in economy. " * 7)[:400]
msgs = []
for i in range(26):
    msgs += [{"role": "user", "content": "Summarise our travel policy in one sentence."},
             {"role": "assistant", "content": answer}]
msgs.append({"role": "user", "content": "Summarise our travel policy in one sentence."})
print(json.dumps({"model": "mock-model", "messages": msgs}))')
ST='{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"Summarise our travel policy in one sentence."}]}'

cpu_ticks() { awk '{print $14+$15}' "/proc/$PAL/stat"; }
TCK=$(getconf CLK_TCK)

run() { # name url body token conc [threads]
  local out before after reqs cpu ttfb
  before=$(cpu_ticks)
  out=$(BODY="$3" TOKEN="$4" THREADS="${6:-}" wrk -t"$([ "$5" -gt 1 ] && echo 2 || echo 1)" -c"$5" -d"${DUR}s" \
        -s bench/post.lua "$2" 2>&1 | grep RESULT | sed 's/RESULT //')
  after=$(cpu_ticks)
  reqs=$(echo "$out" | sed -E 's/.*rps=([0-9.]+).*/\1/' | awk -v d="$DUR" '{print $1*d}')
  cpu="-"
  if [[ "$2" == *9300* ]]; then
    cpu=$(awk -v a="$after" -v b="$before" -v r="$reqs" -v t="$TCK" 'BEGIN{ if (r>0) printf "%.0f", (a-b)/t*1e6/r; else print "-" }')
  fi
  ttfb=$(for _ in $(seq 1 30); do curl -s -o /dev/null -w '%{time_starttransfer}\n' -X POST "$2" \
      -H 'content-type: application/json' ${4:+-H "authorization: Bearer $4"} \
      ${6:+-H "x-palisade-thread: ${6%%,*}"} -d "$3"; done \
      | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int(NR/2)+1]*1000}')
  printf '| %-44s | %4s | %s | cpu_us_per_req=%s | ttfb_p50_ms=%s |\n' "$1" "$5" "$out" "$cpu" "$ttfb"
}

echo "| target | conc | results | palisade CPU | TTFB |"
echo "|---|---|---|---|---|"
for c in 1 32; do
  run "mock directly (non-stream)" http://127.0.0.1:9100/v1/chat/completions "$NS" "" $c
  run "bare pass-through (non-stream)" http://127.0.0.1:9200/v1/chat/completions "$NS" "" $c
  run "palisade stateless (non-stream)" http://127.0.0.1:9300/v1/chat/completions "$NS" "$TOKEN" $c
  run "palisade thread-bound turn (non-stream)" http://127.0.0.1:9300/v1/chat/completions "$NS" "$TOKEN" $c "$HOT"
  run "palisade stateless, same-size history" http://127.0.0.1:9300/v1/chat/completions "$NSH" "$TOKEN" $c
  run "mock directly (stream)" http://127.0.0.1:9100/v1/chat/completions "$ST" "" $c
  run "palisade stateless (stream)" http://127.0.0.1:9300/v1/chat/completions "$ST" "$TOKEN" $c
  run "palisade thread-bound turn (stream)" http://127.0.0.1:9300/v1/chat/completions "$ST" "$TOKEN" $c "$HOT"
done
# Short runs spread over 32 threads, so each thread grows by only ~100 messages.
FULL=$DUR; DUR=2
for len in 10 1000 5000; do
  run "thread-bound turn, threads of $len messages" http://127.0.0.1:9300/v1/chat/completions "$NS" "$TOKEN" 1 "${SCAN[$len]}"
done
DUR=$FULL
mib() { grep "$1" "/proc/$PAL/status" | awk '{printf "%.1f MiB", $2/1024}'; }
echo "palisade RSS: peak $(mib VmHWM); now $(mib VmRSS) = anonymous $(mib RssAnon) + file-backed $(mib RssFile)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
