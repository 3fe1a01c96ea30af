#!/usr/bin/env bash
# Pipeline scaling (issue 21): the same cores split three ways, each driven
# by `strata bench` at several concurrencies, with each stage's idle share
# (the bubble) read from the router's /metrics around each run.
#
#   tools/pipeline_scaling.sh --model DIR [--cores 2] [--concurrency 1,4,16,64]
#       [--prompt 64] [--output 32] [--layouts "1x1x2 2x1x1 1x2x1 2x1x1:8,8"]
#       [--max-seqs 64] [--max-tokens 256]
#
# A layout is STAGESxTPxTHREADS (threads per worker), optionally with
# :N,N,... layers per stage (default: strata up's balanced split) and
# +movable for strata up --movable-boundaries (then the table also gives
# the share of steps run with the boundaries moved). Each
# (layout, concurrency) sends max(4, 2 x concurrency) requests of --prompt
# random tokens and --output new tokens (a closed loop of that many callers)
# after one warm-up request. Prints one JSON object per run, then a
# markdown table: output tokens/s, the ratio to the first layout at the same
# concurrency, TTFT p50/p99, and per stage the share of the run it was idle
# (1 - busy seconds / run seconds, busy = compute + all-reduce on the
# stage's rank 0).
# Needs bazel-bin's tools/strata, router and worker (bazel build //...).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bazel-bin
strata=$bin/tools/strata
model="" concurrency="1,4,16,64" prompt=64 output=32 max_seqs=64 max_tokens=256
layouts="1x1x2 2x1x1 1x2x1"
while [[ $# -gt 0 ]]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --prompt) prompt=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    --layouts) layouts=$2; shift 2 ;;
    --max-seqs) max_seqs=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
[[ -n $model ]] || { echo "--model DIR is required" >&2; exit 2; }
[[ -x $strata ]] || { echo "$strata is missing: bazel build //..." >&2; exit 2; }
work=$(mktemp -d /tmp/pipeline_scaling.XXXXXX)
up_pid=""
cleanup() {
  [[ -n $up_pid ]] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# busy seconds per stage, steps, shifted steps and the scrape time, as JSON:
# {"t": s, "busy": {"0": s, ...}, "steps": n, "shifted": n}
scrape() {
  curl -s "http://$1/metrics" | python3 -c '
import json, re, sys, time
busy = {}
steps = shifted = 0.0
for line in sys.stdin:
    m = re.match(r"strata_pipeline_(shifted_)?steps_total\{[^}]*\} (\S+)", line)
    if m:
        if m.group(1): shifted += float(m.group(2))
        else: steps += float(m.group(2))
    m = re.match(r"strata_pipeline_stage_busy_seconds_total\{([^}]*)\} (\S+)", line)
    if m:
        stage = re.search(r"stage=\"(\d+)\"", m.group(1)).group(1)
        busy[stage] = busy.get(stage, 0.0) + float(m.group(2))
print(json.dumps({"t": time.time(), "busy": busy, "steps": steps, "shifted": shifted}))'
}

results=$work/results.jsonl
for layout in $layouts; do
  spec=${layout%+movable}
  shape=${spec%%:*}
  layers=""
  [[ $spec == *:* ]] && layers=${spec#*:}
  IFS=x read -r stages tp threads <<<"$shape"
  flags=(--stages "$stages" --tp "$tp" --threads "$threads" --metrics-port 0 --max-seqs-per-step "$max_seqs" --max-tokens-per-step "$max_tokens")
  [[ -n $layers ]] && flags+=(--layers "$layers")
  [[ $layout == *+movable ]] && flags+=(--movable-boundaries)
  "$strata" up --model "$model" --bin-dir "$bin" --log-dir "$work/$layout.logs" --ready-file "$work/ready" \
    "${flags[@]}" >"$work/up.log" 2>&1 &
  up_pid=$!
  for _ in $(seq 1 900); do
    [[ -f $work/ready ]] && break
    kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.log"; exit 1; }
    sleep 0.2
  done
  server=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["address"])' "$work/ready")
  metrics=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metrics_address"])' "$work/ready")
  "$strata" bench --server "$server" --num-prompts 1 --prompt-tokens "$prompt" --output-tokens "$output" \
    --progress=false --json >/dev/null
  IFS=, read -ra concs <<<"$concurrency"
  for c in "${concs[@]}"; do
    n=$((2 * c > 4 ? 2 * c : 4))
    before=$(scrape "$metrics")
    summary=$("$strata" bench --server "$server" --num-prompts "$n" --concurrency "$c" --prompt-tokens "$prompt" \
      --output-tokens "$output" --seed "$c" --progress=false --json)
    after=$(scrape "$metrics")
    python3 -c '
import json, sys
s, b, a = (json.loads(x) for x in sys.argv[1:4])
wall = a["t"] - b["t"]
idle = {k: max(0.0, 1 - (a["busy"][k] - b["busy"].get(k, 0.0)) / wall) for k in sorted(a["busy"])}
print(json.dumps({"layout": sys.argv[4], "concurrency": int(sys.argv[5]), "requests": s["requests"],
                  "completed": s["completed"], "output_tokens_per_s": s["output_tokens_per_s"],
                  "ttft_p50_s": s["ttft_s"]["p50"], "ttft_p99_s": s["ttft_s"]["p99"],
                  "stage_idle": idle, "codes": s["codes"],
                  "shifted_share": (a["shifted"] - b["shifted"]) / max(1.0, a["steps"] - b["steps"])}))' "$summary" "$before" "$after" "$layout" "$c" |
      tee -a "$results"
  done
  kill -INT "$up_pid"
  wait "$up_pid" || true
  up_pid=""
  rm -f "$work/ready"
done

python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = rows[0]["layout"]
base = {r["concurrency"]: r["output_tokens_per_s"] for r in rows if r["layout"] == first}
print("\n| layout (stages x TP x threads) | concurrency | output tok/s | vs " + first +
      " | TTFT p50 (s) | TTFT p99 (s) | idle share per stage | steps shifted |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    ratio = r["output_tokens_per_s"] / base[r["concurrency"]] if base.get(r["concurrency"]) else float("nan")
    idle = ", ".join(f"{k}: {v:.2f}" for k, v in r["stage_idle"].items())
    print(f"| {r['layout']} | {r['concurrency']} | {r['output_tokens_per_s']:.2f} | {ratio:.2f} | "
          f"{r['ttft_p50_s']:.3f} | {r['ttft_p99_s']:.3f} | {idle} | {r['shifted_share']:.2f} |")
EOF
