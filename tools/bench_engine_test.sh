#!/bin/bash
# strata bench-engine end to end on the tiny preset: the JSON report has
# every batch asked for with sane numbers, and bad flags are refused with a
# message naming them.
set -euo pipefail
strata="$1"
dir="${TEST_TMPDIR:-$(mktemp -d)}/tiny"
"$strata" make-model --preset tiny --out "$dir" >/dev/null

json=$("$strata" bench-engine --model "$dir" --threads 2 --prompt-tokens 8 --decode-tokens 3 \
  --batches 1,2,5 --rounds 2 --json | tail -1)
python3 - "$json" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["rounds"] == 2, r
assert r["read_bandwidth_gbps"] > 0 and r["prefill_tokens_per_s"] > 0, r
assert r["amx_peak_gflops"] >= 0 and (r["backend"] != "cpu-amx" or r["prefill_of_amx_peak"] > 0), r
batches = [d["batch"] for d in r["decode"]]
assert batches == [1, 2, 5], batches
for d in r["decode"]:
    assert d["tokens_per_s"] > 0 and d["step_ms"] > 0 and d["floor_ms"] > 0, d
    assert abs(d["vs_batch1"] * r["decode"][0]["tokens_per_s"] - d["tokens_per_s"]) < 1e-6 * d["tokens_per_s"], d
print("bench-engine report ok:", batches)
PY

expect_error() {
  local want="$1"; shift
  if out=$("$strata" bench-engine "$@" 2>&1); then
    echo "FAIL: bench-engine $* succeeded"; exit 1
  fi
  grep -q -- "$want" <<<"$out" || { echo "FAIL: bench-engine $*: '$out' does not name $want"; exit 1; }
}
expect_error rounds --model "$dir" --rounds 0
expect_error batches --model "$dir" --batches 1,x
expect_error model --threads 1
echo PASS
