#!/usr/bin/env bash
# Test data for the Llama 3 tokenizer (issue: no model hub is reachable, the
# npm registry is): installs llama3-tokenizer-js, tiktoken and Hugging Face
# tokenizers with npm, exports tokenizer.json and tokenizer.model, and
# writes the corpus's expected ids (from tiktoken, checked against
# tokenizers) into third_party/llama3_tokenizer/data. Skips the work when the
# data is there and the scripts have not changed.
set -euo pipefail
cd "$(dirname "$0")"
out=../../third_party/llama3_tokenizer/data
stamp="$out/stamp"
want=$(cat package.json export.mjs corpus.mjs | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$out/expected.json" ]]; then
  echo "tokenizer data: up to date in third_party/llama3_tokenizer/data"
  exit 0
fi
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "tokenizer data: node and npm are needed (Debian: nodejs npm)" >&2
  exit 1
}
npm install --no-audit --no-fund --loglevel=error >/dev/null
mkdir -p "$out"
node export.mjs "$out"
echo "$want" >"$stamp"
