#!/usr/bin/env bash
# The prepared GPU check: builds the GPU tests and benchmarks, runs every GPU
# test, then the benchmarks, and prints one summary table. Meant for a GPU
# machine; finishes in a few minutes on an H100/H200.
#
#   tests/gpu/run.sh                 build with Bazel here, then run
#   tests/gpu/run.sh --prebuilt DIR  run binaries made by tests/gpu/bundle.sh
#                                    (for GPU machines without Bazel or the
#                                    Debian libraries: DIR/bin and DIR/lib)
#   --quick                          smaller benchmark ceilings
# Writes the full log and the summary to $STRATA_GPU_OUT (default: /tmp/strata-gpu).
set -uo pipefail
cd "$(dirname "$0")/../.."

prebuilt=""
quick=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prebuilt) prebuilt="${2:?--prebuilt needs a folder}"; shift 2 ;;
    --quick) quick="--quick"; shift ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
out="${STRATA_GPU_OUT:-/tmp/strata-gpu}"
mkdir -p "$out"
start=$(date +%s)

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "run.sh: no GPU here (nvidia-smi -L failed); nothing to run" >&2
  exit 2
fi
nvidia-smi -L

source tests/gpu/targets.sh
TESTS=("${GPU_TESTS[@]}")
BENCH=$GPU_BENCH

if [[ -z "$prebuilt" ]]; then
  command -v bazel >/dev/null || { echo "run.sh: no bazel here; use --prebuilt (tests/gpu/bundle.sh)" >&2; exit 2; }
  mapfile -t targets < <(gpu_labels "${TESTS[@]}" "$BENCH")
  bazel build "${targets[@]}" 2>&1 | tail -3 || exit 1
  bindir=bazel-bin
else
  bindir="$prebuilt/bin"
  export LD_LIBRARY_PATH="$prebuilt/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# Libraries the CUDA toolkit folder may lack on this machine (NCCL ships in
# Python wheels on some images): find them and add their folders.
for lib in libnccl.so.2 libcublasLt.so.13 libcudart.so.13; do
  if ! ldconfig -p | grep -q "$lib" && [[ ! -e /usr/local/cuda/lib64/$lib ]] && \
     ! ls ${LD_LIBRARY_PATH//:/\/$lib } 2>/dev/null | grep -q .; then
    found=$(find / -name "$lib" -not -path "/proc/*" 2>/dev/null | head -1)
    if [[ -n "$found" ]]; then
      echo "using $found"
      export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
  fi
done

summary="$out/summary.txt"
: >"$summary"
failed=0
printf "%-40s %-8s %s\n" "GPU test" "result" "seconds" | tee -a "$summary"
for t in "${TESTS[@]}"; do
  bin="$bindir/$t"
  name="${t##*/}"
  t0=$(date +%s.%N)
  if [[ ! -x "$bin" ]]; then
    result="MISSING"
  elif "$bin" >"$out/$name.log" 2>&1; then
    if grep -q "skipping GPU test" "$out/$name.log"; then result="SKIPPED"; else result="PASSED"; fi
  else
    result="FAILED"
  fi
  [[ $result == PASSED ]] || failed=$((failed + 1))
  printf "%-40s %-8s %.1f\n" "$name" "$result" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" | tee -a "$summary"
  if [[ $result == FAILED ]]; then grep -E "Failure|error|FAILED|got|Expected|Which is|Value of" "$out/$name.log" | head -30; fi
done

echo | tee -a "$summary"
if [[ -x "$bindir/$BENCH" ]]; then
  timeout 300 "$bindir/$BENCH" $quick 2>&1 | tee "$out/bench.log" | tee -a "$summary" || failed=$((failed + 1))
else
  echo "cuda_bench missing" | tee -a "$summary"
  failed=$((failed + 1))
fi
echo "gpu run: $(( $(date +%s) - start )) s, $failed problem(s)" | tee -a "$summary"
[[ $failed -eq 0 ]]
