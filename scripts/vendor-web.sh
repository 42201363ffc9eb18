#!/usr/bin/env bash
# Refreshes the chat page's third-party scripts in web/vendor/ from npm, at the pinned
# versions below (npm verifies each tarball's registry integrity hash). The files are
# committed and embedded in the binary: the page loads nothing from anywhere else.
#
#   marked        Markdown to HTML                    MIT
#   dompurify     HTML sanitizer (after marked)       Apache-2.0 OR MPL-2.0
#   highlight.js  syntax highlighting of code blocks  BSD-3-Clause
set -euo pipefail
cd "$(dirname "$0")/.."
MARKED=18.3.0
DOMPURIFY=3.5.0
HLJS=11.12.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "marked@$MARKED" "dompurify@$DOMPURIFY" "@highlightjs/cdn-assets@$HLJS" >/dev/null)
for t in "$work"/*.tgz; do mkdir -p "${t%.tgz}"; tar xzf "$t" -C "${t%.tgz}"; done
mkdir -p web/vendor
# Source-map comments go: a browser with its tools open would fetch the missing maps.
strip() { sed '/^\/\/# sourceMappingURL=/d' "$1" > "$2"; }
strip "$work/marked-$MARKED/package/lib/marked.esm.js" web/vendor/marked.esm.js
strip "$work/dompurify-$DOMPURIFY/package/dist/purify.es.mjs" web/vendor/purify.es.mjs
strip "$work/highlightjs-cdn-assets-$HLJS/package/es/highlight.min.js" web/vendor/highlight.min.js
strip "$work/highlightjs-cdn-assets-$HLJS/package/styles/github.min.css" web/vendor/highlight-light.min.css
strip "$work/highlightjs-cdn-assets-$HLJS/package/styles/github-dark.min.css" web/vendor/highlight-dark.min.css
cat "$work/marked-$MARKED/package/LICENSE" > web/vendor/LICENSES.txt
{ echo; echo "---- DOMPurify $DOMPURIFY"; cat "$work/dompurify-$DOMPURIFY/package/LICENSE"; } >> web/vendor/LICENSES.txt
{ echo; echo "---- highlight.js $HLJS"; cat "$work/highlightjs-cdn-assets-$HLJS/package/LICENSE"; } >> web/vendor/LICENSES.txt
sed -i "1i ---- marked $MARKED" web/vendor/LICENSES.txt
ls -l web/vendor
