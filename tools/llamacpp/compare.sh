#!/usr/bin/env bash
# strata against llama.cpp on the same weights, machine and thread counts:
# writes the model as GGUF (tools/llamacpp/to_gguf.py), runs llama.cpp's
# prebuilt CPU build (npm node-llama-cpp) and `strata bench-engine`, and
# prints greedy-token agreement, prompt and batch-1 decode throughput.
#   tools/llamacpp/compare.sh [--preset tiny|1b] [--threads 1,2] [--prompt-tokens 128] [--decode 64]
set -euo pipefail
cd "$(dirname "$0")/../.."
preset=1b threads=1,2 prompt_tokens=128 decode=64
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) preset="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --prompt-tokens) prompt_tokens="$2"; shift 2 ;;
    --decode) decode="$2"; shift 2 ;;
    *) echo "compare: unknown argument $1" >&2; exit 2 ;;
  esac
done
bazel build //tools:strata >/dev/null 2>&1
strata=bazel-bin/tools/strata
model="out/${preset}-llama3vocab-model"
if [[ ! -f "$model/config.json" ]]; then
  tools/tokenizer/make_data.sh >/dev/null
  "$strata" make-model --out "$model" --preset "$preset" --vocab 128256 --seed 3 \
    --tokenizer third_party/llama3_tokenizer/data
fi
[[ -f "$model.gguf" ]] || python3 tools/llamacpp/to_gguf.py "$model" "$model.gguf"
(cd tools/llamacpp && [[ -d node_modules/node-llama-cpp ]] ||
  npm install --no-audit --no-fund --ignore-scripts --omit=optional --loglevel=error >/dev/null)
prompt=$(python3 -c "print(','.join(str((i * 7919 + 11) % 120000 + 100) for i in range($prompt_tokens)))")
echo "model: $model (bf16), prompt $prompt_tokens tokens, decode $decode tokens, batch 1"
llama=$(node tools/llamacpp/bench.mjs "$PWD/$model.gguf" --prompt-ids "$prompt" --decode "$decode" --threads "$threads")
echo "llama.cpp: $llama"
for t in ${threads//,/ }; do
  ours=$("$strata" run --model "$model" --prompt-ids "$prompt" --max-tokens "$decode" --ignore-eos --threads "$t" --json 2>/dev/null | head -1)
  bench=$("$strata" bench-engine --model "$model" --threads "$t" --prompt-tokens "$prompt_tokens" --decode-tokens "$decode" --batches 1 --json 2>/dev/null | tail -1)
  python3 - "$llama" "$ours" "$bench" "$t" <<'PY'
import json, sys
llama, ours, bench, t = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
r = [x for x in llama["results"] if x["threads"] == t][0]
a, b = r["tokens"], ours["tokens"]
same = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
print(f"threads {t}: greedy tokens agree for {same} of {len(b)}")
print(json.dumps({"threads": t, "llama_cpp": {"prompt_tokens_per_s": round(r["prompt_tokens_per_s"], 1),
                  "decode_tokens_per_s": round(r["decode_tokens_per_s"], 2)}, "strata_bench_engine": bench}))
PY
done
