#!/usr/bin/env bash
# strata load against a local cluster of two replicas: steady open-loop load
# is all OK; with one replica's worker SIGKILLed mid-run every request still
# ends OK (the requests in flight continue on the other replica); past the
# queue bound the router answers RESOURCE_EXHAUSTED and keeps serving.
# strata bench against the same cluster: Poisson arrivals, a closed loop
# with uniform lengths, a JSONL dataset (a bad one named by its line), and
# overload counted by status code name.
# Usage: load_test.sh STRATA   (Bazel passes bazel-bin's tools/strata)
set -euo pipefail
strata=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
bin=$(dirname "$(dirname "$strata")")
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/load_test.XXXXXX")
up_pid=
cleanup() {
  [[ -n "$up_pid" ]] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$strata" make-model --out "$work/model" --preset tiny --dtype f32 --seed 1 >/dev/null
# A small KV pool (64 blocks of 16 tokens per replica): the overload below
# fills it whatever the machine's speed, so waiting requests pass the
# queue bound.
"$strata" up --model "$work/model" --replicas 2 --kv-blocks 64 --kv-dtype f32 --max-queue 8 \
  --bin-dir "$bin" --ready-file "$work/ready" >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 900); do [[ -f "$work/ready" ]] && break; sleep 0.2; done
[[ -f "$work/ready" ]] || { cat "$work/up.log"; echo "FAIL: strata up did not come up"; exit 1; }
field() { python3 -c "import json, sys; print(eval('json.load(open(sys.argv[1]))' + sys.argv[2]))" "$work/ready" "$1"; }
address=$(field "['address']")
load() { "$strata" load --server "$address" --prompt-tokens 16 --max-tokens 24 --json "$@"; }
check() {  # summary, python condition on s, what
  python3 -c "import json, sys; s = json.loads(sys.argv[1]); sys.exit(0 if ($2) else 1)" "$1" ||
    { echo "FAIL: $3: $1"; exit 1; }
  echo "ok: $3"
}

steady=$(load --rate 10 --duration-s 3)
check "$steady" "s['codes'] == {'OK': s['requests']} and s['requests'] > 10 and s['ttft_s']['p50'] > 0" \
  "steady load is all OK"
(sleep 1.5; kill -9 "$(field "['workers'][1]['pid']")") &
fault=$(load --rate 10 --duration-s 4)
check "$fault" "s['codes'] == {'OK': s['requests']}" "a replica killed mid-run loses no request"
over=$(load --rate 300 --duration-s 2 --max-tokens 400)
check "$over" "s['codes'].get('RESOURCE_EXHAUSTED', 0) > 0 and s['codes'].get('OK', 0) > 0" \
  "past the queue bound: RESOURCE_EXHAUSTED, and still serving"

bench() { "$strata" bench --server "$address" --json "$@"; }
dist="all(s[k][q] > 0 for k in ('ttft_s', 'inter_token_s', 'tpot_s', 'latency_s') for q in ('mean', 'p50', 'p90', 'p99'))"
poisson=$(bench --num-prompts 40 --request-rate 20 --prompt-tokens 16 --output-tokens 24)
check "$poisson" "s['codes'] == {'OK': 40} and s['completed'] == 40 and s['output_tokens'] == 40 * 24 \
  and s['prompt_tokens'] == 40 * 16 and s['request_throughput'] > 0 and s['output_tokens_per_s'] > 0 and $dist" \
  "bench: 40 Poisson arrivals at 20/s, all OK, every latency reported"
closed=$(bench --num-prompts 24 --concurrency 4 --prompt-len-dist uniform --prompt-tokens-min 4 \
  --prompt-tokens-max 40 --output-len-dist uniform --output-tokens-min 2 --output-tokens-max 12)
check "$closed" "s['codes'] == {'OK': 24} and 24 * 4 <= s['prompt_tokens'] <= 24 * 40 \
  and 24 * 2 <= s['output_tokens'] <= 24 * 12 and s['prompt_tokens'] not in (24 * 4, 24 * 40)" \
  "bench: a closed loop of 4 with uniform lengths"
printf '%s\n' '{"prompt_tokens": 8, "output_tokens": 5}' '' '{"prompt_ids": [1, 2, 3], "output_tokens": 7}' \
  >"$work/workload.jsonl"
dataset=$(bench --dataset "$work/workload.jsonl")
check "$dataset" "s['codes'] == {'OK': 2} and s['output_tokens'] == 12 and s['prompt_tokens'] == 11" \
  "bench: a JSONL dataset, one request per line"
printf '%s\n' '{"prompt_tokens": 8, "output_tokens": 5}' '{"prompt_tokens": 8, "output_tokens": -1}' \
  >"$work/bad.jsonl"
set +e
bad=$("$strata" bench --server "$address" --dataset "$work/bad.jsonl" 2>&1)
rc=$?
set -e
[[ $rc -eq 2 && "$bad" == *"bad.jsonl:2: \"output_tokens\" must be an integer"* ]] ||
  { echo "FAIL: a bad dataset line: status $rc: $bad"; exit 1; }
echo "ok: bench: a bad dataset line is named: $bad"
overload=$(bench --num-prompts 300 --request-rate inf --output-tokens 400)
check "$overload" "s['codes'].get('RESOURCE_EXHAUSTED', 0) > 0 and s['codes'].get('OK', 0) > 0 \
  and sum(s['codes'].values()) == 300" "bench: 300 at once past the queue bound: RESOURCE_EXHAUSTED by name, and OK"
