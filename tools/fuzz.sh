#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (AddressSanitizer, UBSan) and runs
# each for a bounded time: the safetensors header parser (over the
# checked-in corpus), the data plane's wire format (header validation,
# plan and result decoding) and the Llama 3 tokenizer (encode, decode and
# stream any bytes).
# Usage: tools/fuzz.sh [SECONDS per target]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
out="${STRATA_FUZZ_DIR:-/tmp/strata-fuzz}"
mkdir -p "$out/corpus" "$out/wire_corpus"
cp -n model/testdata/safetensors_corpus/* "$out/corpus/" 2>/dev/null || true
cp -n transport/testdata/wire_corpus/* "$out/wire_corpus/" 2>/dev/null || true
command -v clang++ >/dev/null || { echo "fuzz: clang++ missing; run tools/setup.sh" >&2; exit 1; }
# Link flags come from Debian's own pkg-config files for Abseil.
absl_libs=$(pkg-config --libs absl_statusor absl_status absl_strings absl_str_format absl_synchronization \
  absl_flat_hash_map absl_hash)
flags=(-std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -I. -I/usr/include)
clang++ "${flags[@]}" model/safetensors_fuzz.cc model/safetensors.cc model/dtype.cc model/file_system.cc \
  $absl_libs -o "$out/safetensors_fuzzer"
clang++ "${flags[@]}" transport/wire_fuzz.cc transport/wire.cc $absl_libs -o "$out/wire_fuzzer"
clang++ "${flags[@]}" model/tokenizer_fuzz.cc model/tokenizer.cc model/file_system.cc $absl_libs \
  -o "$out/tokenizer_fuzzer"
tokenizer_dir=third_party/llama3_tokenizer/data
[[ -f "$tokenizer_dir/tokenizer.model" ]] || tools/tokenizer/make_data.sh
mkdir -p "$out/tokenizer_corpus"
printf 'Hello world' >"$out/tokenizer_corpus/hello"
printf '<|eot_id|> caf\xc3\xa9 \xf0\x9f\xa6\x99 \t\n  x' >"$out/tokenizer_corpus/mixed"

run() {  # name corpus max_len
  echo "fuzz: running $1 for ${seconds}s"
  "$out/$1" -max_total_time="$seconds" -max_len="$3" -timeout=5 -print_final_stats=1 "$2" 2>"$out/$1.log" || {
    tail -40 "$out/$1.log" >&2
    echo "fuzz: $1 found a crash (log: $out/$1.log)" >&2
    exit 1
  }
  grep -E "stat::number_of_executed_units" "$out/$1.log" | tail -1
}
run safetensors_fuzzer "$out/corpus" 4096
run wire_fuzzer "$out/wire_corpus" 8192
export STRATA_TOKENIZER_DIR="$PWD/$tokenizer_dir"
run tokenizer_fuzzer "$out/tokenizer_corpus" 4096
echo "fuzz: no crash"
