#!/usr/bin/env bash
# DPoP on the chat path: the same stateless completion with a plain bearer token and
# with a DPoP-bound token (tokens.dpop = "required"), where every request carries a
# fresh proof (pre-signed by examples/dpop_proofs.rs, one per request, so the server
# checks a real proof each time: signature, htm/htu/iat/ath, thumbprint, and spends the
# jti in the replay cache). Prints one table: requests/s, p50/p99, palisade's CPU time
# per request. A control row sends the same proofs beside a bearer token (not checked),
# so the client-side work and request size are equal to the DPoP row. Loopback only;
# every process is stopped by PID.
#
# Usage: bench/run-dpop.sh [seconds-per-run]   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-6}
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --bin palisade --example mock_upstream --example dpop_proofs
T=target/release
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

MOCK_STRICT=0 MOCK_ANSWER_CHARS=400 $T/examples/mock_upstream 127.0.0.1:9100 >/dev/null & pids+=($!)
export PALISADE_LLM__BASE_URL=http://127.0.0.1:9100/v1 PALISADE_LLM__MODEL=mock-model
export PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE=100000000 PALISADE_LOG__LEVEL=warn
export PALISADE_EMBEDDINGS__KIND=none

start_palisade() { # port dir [extra env...]
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  echo "bench-password-123" | env "$@" $T/palisade --data-dir "$dir" user add bench --roles employee --tenant acme --password-stdin >/dev/null
  env "$@" $T/palisade --data-dir "$dir" serve --listen 127.0.0.1:"$port" >"$dir/out" 2>"$dir/log" & pids+=($!)
  until grep -q "listening" "$dir/out" 2>/dev/null; do sleep 0.01; done
}
start_palisade 9300 "$WORK/bearer" PALISADE_PUBLIC_ORIGIN=http://127.0.0.1:9300
BEARER_PID=${pids[-1]}
start_palisade 9301 "$WORK/dpop" PALISADE_PUBLIC_ORIGIN=http://127.0.0.1:9301 PALISADE_TOKENS__DPOP=required
DPOP_PID=${pids[-1]}

LOGIN='{"username":"bench","password":"bench-password-123"}'
BEARER=$(curl -s -X POST 127.0.0.1:9300/auth/login -H 'content-type: application/json' -d "$LOGIN" \
  | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])')
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/key.pem" 2>/dev/null
LOGIN_PROOF=$($T/examples/dpop_proofs "$WORK/key.pem" POST http://127.0.0.1:9301/auth/login 1)
BOUND=$(curl -s -X POST 127.0.0.1:9301/auth/login -H 'content-type: application/json' -H "DPoP: $LOGIN_PROOF" -d "$LOGIN" \
  | python3 -c 'import json,sys;b=json.load(sys.stdin);assert b["token_type"]=="DPoP";print(b["access_token"])')

NS='{"model":"mock-model","messages":[{"role":"user","content":"Summarise our travel policy in one sentence."}]}'
TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

run() { # name pid url conc mode
  local t out before after reqs cpu
  t=$([ "$4" -gt 1 ] && echo 2 || echo 1)
  before=$(cpu_ticks "$2")
  if [ "$5" != bearer ]; then
    # Enough proofs for the fastest plausible run, signed just now (iat is checked).
    $T/examples/dpop_proofs "$WORK/key.pem" POST "$3" $((DUR * 12000)) "$BOUND" >"$WORK/proofs"
    local scheme=DPoP token=$BOUND
    [ "$5" = control ] && { scheme=Bearer; token=$BEARER; }
    before=$(cpu_ticks "$2")
    out=$(BODY="$NS" TOKEN="$token" SCHEME=$scheme PROOFS="$WORK/proofs" WRK_THREADS=$t wrk -t"$t" -c"$4" -d"${DUR}s" \
          -s bench/dpop.lua "$3" 2>&1 | grep RESULT | sed 's/RESULT //')
  else
    out=$(BODY="$NS" TOKEN="$BEARER" wrk -t"$t" -c"$4" -d"${DUR}s" -s bench/post.lua "$3" 2>&1 | grep RESULT | sed 's/RESULT //')
  fi
  after=$(cpu_ticks "$2")
  reqs=$(echo "$out" | sed -E 's/.*rps=([0-9.]+).*/\1/' | awk -v d="$DUR" '{print $1*d}')
  cpu=$(awk -v a="$after" -v b="$before" -v r="$reqs" -v t="$TCK" 'BEGIN{ if (r>0) printf "%.0f", (a-b)/t*1e6/r; else print "-" }')
  printf '| %-34s | %4s | %s | cpu_us_per_req=%s |\n' "$1" "$4" "$out" "$cpu"
}

echo "| target | conc | results | palisade CPU |"
echo "|---|---|---|---|"
for c in 1 32; do
  run "stateless completion, bearer" "$BEARER_PID" http://127.0.0.1:9300/v1/chat/completions $c bearer
  run "bearer + an unchecked proof header" "$BEARER_PID" http://127.0.0.1:9300/v1/chat/completions $c control
  run "stateless completion, DPoP" "$DPOP_PID" http://127.0.0.1:9301/v1/chat/completions $c dpop
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
