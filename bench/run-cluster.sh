#!/usr/bin/env bash
# The cost of the network stores: the chat path on the cluster store (Redis +
# PostgreSQL, one node and two nodes) beside the embedded store, and revocation
# propagation between two nodes. Starts, on loopback only: the mock upstream (a fixed
# 400-character answer), palisade on the embedded store, and two palisade nodes on the
# cluster store (a fresh PostgreSQL database, dropped at the end; the local Redis under
# a fresh key prefix). Two nodes are driven by two wrk processes at once (half the
# connections each; the table sums their rates and shows the worse p99).
#
# Usage: bench/run-cluster.sh [seconds-per-run]   (needs wrk, PostgreSQL with pgvector
# and Redis on 127.0.0.1: scripts/services.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-8}
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)"; exit 1; }
./scripts/services.sh
cargo build --release --quiet --bin palisade --example mock_upstream
T=target/release
WORK=$(mktemp -d)
DB=palisade_bench_$$
PG_ADMIN=${PALISADE_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "$DB:*" | xargs -r redis-cli del >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql "$PG_ADMIN" -qc "CREATE DATABASE $DB"

MOCK_STRICT=0 MOCK_ANSWER_CHARS=400 $T/examples/mock_upstream 127.0.0.1:9100 >/dev/null & pids+=($!)
export PALISADE_LLM__BASE_URL=http://127.0.0.1:9100/v1 PALISADE_LLM__MODEL=mock-model
export PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE=100000000 PALISADE_LOG__LEVEL=warn
export PALISADE_THREADS__MAX_MESSAGES_PER_THREAD=100000000 PALISADE_THREADS__MAX_THREADS_PER_USER=100000
export PALISADE_LIMITS__LOGIN_ATTEMPTS_PER_IP=100000 PALISADE_LIMITS__LOGIN_USER_ATTEMPT_BURST=100000
export PALISADE_EMBEDDINGS__KIND=none
mkdir -p "$WORK/emb" "$WORK/a" "$WORK/b"
chmod 700 "$WORK"/*
CLUSTER=(PALISADE_STORE__KIND=cluster "PALISADE_STORE__POSTGRES_URL=${PG_ADMIN%/*}/$DB"
         "PALISADE_STORE__REDIS_PREFIX=$DB:" "PALISADE_TOKENS__KEYS_FILE=$WORK/keys.json")
echo "bench-password-123" | $T/palisade --data-dir "$WORK/emb" user add bench --roles employee --tenant acme --password-stdin >/dev/null
echo "bench-password-123" | env "${CLUSTER[@]}" $T/palisade --data-dir "$WORK/a" user add bench --roles employee --tenant acme --password-stdin >/dev/null

declare -A PORT_PID
pid_of() { echo "${PORT_PID[$1]}"; }
serve() { # name port [env...]
  local name=$1 port=$2; shift 2
  env "$@" $T/palisade --data-dir "$WORK/$name" serve --listen "127.0.0.1:$port" >"$WORK/$name.out" 2>"$WORK/$name.log" &
  pids+=($!); PORT_PID[$port]=$!
  until grep -q "listening" "$WORK/$name.out" 2>/dev/null; do sleep 0.01; done
}
serve emb 9300
serve a 9301 "${CLUSTER[@]}"
serve b 9302 "${CLUSTER[@]}"

token() { curl -s -X POST "127.0.0.1:$1/auth/login" -H 'content-type: application/json' \
  -d '{"username":"bench","password":"bench-password-123"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])'; }
threads() { # port count -> comma-separated new thread ids
  local ids=()
  for _ in $(seq 1 "$3"); do
    ids+=("$(curl -s -X POST "127.0.0.1:$1/v1/threads" -H "authorization: Bearer $2" \
      -H 'content-type: application/json' -d '{}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')")
  done
  (IFS=,; echo "${ids[*]}")
}
TE=$(token 9300); TC=$(token 9301)
HOT_E=$(threads 9300 "$TE" 32); HOT_A=$(threads 9301 "$TC" 16); HOT_B=$(threads 9301 "$TC" 16)
NS='{"model":"mock-model","messages":[{"role":"user","content":"Summarise our travel policy in one sentence."}]}'

TCK=$(getconf CLK_TCK)
ticks() { # pids... -> summed user+system ticks
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo $t
}
store_pids() { pgrep -d' ' -x postgres; pgrep -d' ' -x redis-server; }
PAL_PIDS=""
# Store CPU: every Redis and PostgreSQL process at the end of a run, less what each had
# at its start (0 for a backend that a pool opened during the run).
declare -A STO_BEGIN
cpu_begin() {
  STO_BEGIN=()
  local p
  for p in $(store_pids); do STO_BEGIN[$p]=$(ticks "$p"); done
  B_PAL=$(ticks $PAL_PIDS)
}
store_delta() {
  local t=0 p
  for p in $(store_pids); do t=$((t + $(ticks "$p") - ${STO_BEGIN[$p]:-0})); done
  echo $t
}
cpu_end() { # requests -> "palisade_us stores_us" per request
  local pal sto
  pal=$(( $(ticks $PAL_PIDS) - B_PAL )); sto=$(store_delta)
  awk -v a="$pal" -v b="$sto" -v r="$1" -v t="$TCK" 'BEGIN{ printf "%.0f %.0f\n", a/t*1e6/r, b/t*1e6/r }'
}

wrk1() { # url token conc threads -> "rps p50 p99 errors"
  BODY="$NS" TOKEN="$2" THREADS="${4:-}" wrk -t"$([ "$3" -gt 1 ] && echo 2 || echo 1)" -c"$3" -d"${DUR}s" \
    -s bench/post.lua "$1" 2>&1 | grep RESULT | sed -E 's/.*rps=([0-9.]+) p50_ms=([0-9.]+) p99_ms=([0-9.]+) errors=([0-9]+).*/\1 \2 \3 \4/'
}
row() { # name conc rps p50 p99 errors palisade_us stores_us
  printf '| %-40s | %4s | %8.1f | %7.2f | %7.2f | %s | %s | %s |\n' "$@"
}
one() { # name port token conc [threads]
  PAL_PIDS=$(pid_of "$2"); cpu_begin
  read -r rps p50 p99 err < <(wrk1 "http://127.0.0.1:$2/v1/chat/completions" "$3" "$4" "${5:-}")
  read -r cp cs < <(cpu_end "$(awk -v r="$rps" -v d="$DUR" 'BEGIN{print r*d}')")
  row "$1" "$4" "$rps" "$p50" "$p99" "$err" "$cp" "$cs"
}
two() { # name conc [threads-a threads-b]
  local half=$(( $2 / 2 ))
  PAL_PIDS="$(pid_of 9301) $(pid_of 9302)"; cpu_begin
  wrk1 http://127.0.0.1:9301/v1/chat/completions "$TC" "$half" "${3:-}" >"$WORK/wa" &
  local w=$!
  wrk1 http://127.0.0.1:9302/v1/chat/completions "$TC" "$half" "${4:-}" >"$WORK/wb"
  wait $w
  read -r r1 a1 p1 e1 <"$WORK/wa"; read -r r2 a2 p2 e2 <"$WORK/wb"
  local rps; rps=$(echo "$r1 + $r2" | bc)
  read -r cp cs < <(cpu_end "$(awk -v r="$rps" -v d="$DUR" 'BEGIN{print r*d}')")
  row "$1" "$2" "$rps" "$(echo "if ($a1 > $a2) $a1 else $a2" | bc)" \
    "$(echo "if ($p1 > $p2) $p1 else $p2" | bc)" "$((e1 + e2))" "$cp" "$cs"
}

echo "| target | conc | req/s | p50 ms | p99 ms | errors | palisade CPU µs/req | Redis+PostgreSQL CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|"
for c in 1 32; do
  one "embedded, stateless" 9300 "$TE" $c
  one "cluster, 1 node, stateless" 9301 "$TC" $c
  one "embedded, thread-bound turn" 9300 "$TE" $c "$HOT_E"
  one "cluster, 1 node, thread-bound turn" 9301 "$TC" $c "$HOT_A,$HOT_B"
done
two "cluster, 2 nodes, stateless" 32
two "cluster, 2 nodes, thread-bound turn" 32 "$HOT_A" "$HOT_B"
echo
python3 bench/revocation.py 127.0.0.1:9301 127.0.0.1:9302 bench bench-password-123 200
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
