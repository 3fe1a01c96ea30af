#!/usr/bin/env bash
# The OpenAI-compatible HTTP API driven by the official `openai` npm client
# (tools/openai/gateway_test.mjs). tools/test.sh runs it after the Bazel
# tests; it needs bazel-bin's strata, strata-router and strata-worker and
# the Llama 3 tokenizer data (tools/tokenizer/make_data.sh).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
npm install --no-audit --no-fund --loglevel=error >/dev/null
exec node gateway_test.mjs "$root/bazel-bin" "$root/third_party/llama3_tokenizer/data"
