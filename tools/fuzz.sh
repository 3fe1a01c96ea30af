#!/usr/bin/env bash
# Builds the safetensors header fuzzer with clang's libFuzzer and AddressSanitizer
# and runs it for a bounded time over the checked-in corpus.
# Usage: tools/fuzz.sh [SECONDS]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
out="${STRATA_FUZZ_DIR:-/tmp/strata-fuzz}"
mkdir -p "$out/corpus"
cp -n model/testdata/safetensors_corpus/* "$out/corpus/" 2>/dev/null || true
command -v clang++ >/dev/null || { echo "fuzz: clang++ missing; run tools/setup.sh" >&2; exit 1; }
# Link flags come from Debian's own pkg-config files for Abseil.
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -I. -I/usr/include \
  model/safetensors_fuzz.cc model/safetensors.cc model/dtype.cc model/file_system.cc \
  $(pkg-config --libs absl_statusor absl_status absl_strings absl_str_format absl_synchronization) \
  -o "$out/safetensors_fuzzer"
echo "fuzz: running safetensors_fuzzer for ${seconds}s"
"$out/safetensors_fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=5 \
  -print_final_stats=1 "$out/corpus" 2>"$out/fuzz.log" || {
  tail -40 "$out/fuzz.log" >&2
  echo "fuzz: the fuzzer found a crash (log: $out/fuzz.log)" >&2
  exit 1
}
grep -E "stat::number_of_executed_units|Done" "$out/fuzz.log" | tail -2
echo "fuzz: no crash"
