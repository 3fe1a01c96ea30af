#!/usr/bin/env bash
# README's first command: installs what is missing, builds strata, makes a
# small random Llama 3 model and generates tokens from it.
# Usage: tools/quickstart.sh [--preset tiny|1b] [--max-tokens N]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=tiny
max_tokens=16
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) preset="$2"; shift 2 ;;
    --max-tokens) max_tokens="$2"; shift 2 ;;
    *) echo "quickstart: unknown argument $1" >&2; exit 2 ;;
  esac
done

tools/setup.sh
bazel build //tools:strata
strata=bazel-bin/tools/strata
model="out/${preset}-model"
if [[ ! -f "$model/config.json" ]]; then
  "$strata" make-model --out "$model" --preset "$preset" --seed 1
fi
echo "prompt ids: 1 15 27 99 3"
"$strata" run --model "$model" --prompt-ids 1,15,27,99,3 --max-tokens "$max_tokens" \
  --threads "$(nproc)" --json --logits
