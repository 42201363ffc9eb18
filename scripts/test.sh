#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what the tests need that a fresh machine lacks, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Habits first, they are the cheapest to fail: formatting and lints (warnings are errors).
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

# The official OpenAI Python SDK, for the compatibility test, in a private venv.
PYENV=target/pyenv
if ! "$PYENV/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$PYENV"
  "$PYENV/bin/pip" install --quiet --disable-pip-version-check "openai>=1.40,<3"
fi
export PALISADE_TEST_PYTHON="$PWD/$PYENV/bin/python"

# The real embedding model for the semantic-retrieval test (SHA-256 verified).
./scripts/fetch-model.sh

# Tests spawn the real `palisade` binary on ephemeral ports; keep the parallelism
# modest on a 2-core machine so timing-based assertions stay honest.
export RUST_BACKTRACE=0
cargo test --locked -- --test-threads="${PALISADE_TEST_THREADS:-4}"
