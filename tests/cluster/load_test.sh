#!/usr/bin/env bash
# strata load against a local cluster of two replicas: steady open-loop load
# is all OK; with one replica's worker SIGKILLed mid-run every request still
# ends OK (the requests in flight continue on the other replica); past the
# queue bound the router answers RESOURCE_EXHAUSTED and keeps serving.
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
check "$over" "s['codes'].get('code_8', 0) > 0 and s['codes'].get('OK', 0) > 0" \
  "past the queue bound: RESOURCE_EXHAUSTED, and still serving"
