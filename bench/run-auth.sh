#!/usr/bin/env bash
# Runs the session-core micro-benchmarks (criterion, release profile) and prints a table
# of median (p50) times. Usage: bench/run-auth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench auth -- --noplot >/dev/null 2>&1 || cargo bench --bench auth
printf '%-40s %14s %14s\n' "benchmark" "p50" "mean"
for est in $(find target/criterion -path '*/new/estimates.json' | sort); do
  name=$(echo "$est" | sed -e 's#target/criterion/##' -e 's#/new/estimates.json##')
  python3 - "$name" "$est" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
e = json.load(open(path))
def fmt(ns):
    return f"{ns/1e6:.2f} ms" if ns >= 1e6 else f"{ns/1e3:.2f} µs"
print(f"{name:<40} {fmt(e['median']['point_estimate']):>14} {fmt(e['mean']['point_estimate']):>14}")
PY
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
