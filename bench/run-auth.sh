#!/usr/bin/env bash
# Runs the session-core micro-benchmarks (release profile) and prints a table
# of median (p50) times. Usage: bench/run-auth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench auth
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
