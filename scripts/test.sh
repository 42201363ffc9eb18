#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what the tests need that a fresh machine lacks, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests spawn the real `palisade` binary on ephemeral ports; keep the default
# parallelism modest on a 2-core machine so timing-based assertions stay honest.
export RUST_BACKTRACE=0
cargo test --locked -- --test-threads="${PALISADE_TEST_THREADS:-4}"
