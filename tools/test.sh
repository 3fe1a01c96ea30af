#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds everything (CUDA code included)
# and runs every test, then the libFuzzer target for a bounded time.
# This is README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

tools/setup.sh --with-torch
tools/tokenizer/make_data.sh  # the Llama 3 tokenizer's files and expected ids, from npm

log=$(mktemp)
set +e
bazel test //... --test_summary=short 2>&1 | tee "$log" | grep -vE "^(\[|INFO: From|Loading|Analyzing)"
bazel_rc=${PIPESTATUS[0]}
set -e
passed=$(grep -cE "^//.*PASSED" "$log" || true)
failed=$(grep -cE "^//.*(FAILED|TIMEOUT|NO STATUS|INCOMPLETE)" "$log" || true)
if [[ $bazel_rc -ne 0 && $failed -eq 0 ]]; then failed=1; fi  # build failure

# GPU tests pass by skipping where no GPU exists: count them as skipped and
# say why, rather than let them count as passed.
skipped=0
while IFS= read -r gpu_log; do
  skipped=$((skipped + 1))
  echo "skipped $(dirname "${gpu_log#bazel-testlogs/}"): $(grep -m1 -o 'skipping GPU test: .*' "$gpu_log")"
done < <(find -L bazel-testlogs/ -name test.log -exec grep -l "skipping GPU test" {} + 2>/dev/null || true)
# Tests that need something this machine lacks (network namespaces) say
# "SKIP: why" and pass: count them as skipped too.
while IFS= read -r skip_log; do
  skipped=$((skipped + 1))
  echo "skipped $(dirname "${skip_log#bazel-testlogs/}"): $(grep -m1 -o '^SKIP: .*' "$skip_log")"
done < <(find -L bazel-testlogs/ -name test.log -exec grep -l "^SKIP: " {} + 2>/dev/null || true)
passed=$((passed - skipped))

# The OpenAI-compatible HTTP API through the official `openai` npm client.
openai_rc=0
tools/openai/run_test.sh || openai_rc=$?
if [[ $openai_rc -eq 0 ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

fuzz_rc=0
tools/fuzz.sh "${STRATA_FUZZ_SECONDS:-30}" || fuzz_rc=$?
if [[ $fuzz_rc -eq 0 ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

echo "test time: $(( $(date +%s) - start )) s"
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
[[ $failed -eq 0 ]]
