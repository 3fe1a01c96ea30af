#!/usr/bin/env bash
# Builds the GPU tests and benchmarks here with Bazel and packs them, with
# the shared libraries a bare GPU machine lacks (Abseil and the project's own
# libraries; not glibc, libstdc++ or the CUDA toolkit's), into DIR/bin and
# DIR/lib for `tests/gpu/run.sh --prebuilt DIR`.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${1:?usage: tests/gpu/bundle.sh DIR}"
rm -rf "$dir"
mkdir -p "$dir/bin" "$dir/lib"
source tests/gpu/targets.sh
TESTS=("${GPU_TESTS[@]}" "$GPU_BENCH")
mapfile -t targets < <(gpu_labels "${TESTS[@]}")
bazel build "${targets[@]}" 2>&1 | grep -E "^ERROR|Build completed" || true
for t in "${TESTS[@]}"; do
  mkdir -p "$dir/bin/${t%/*}"
  cp -L "bazel-bin/$t" "$dir/bin/$t"
  ldd "bazel-bin/$t" | awk '/=>/ {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libstdc++*|libgcc_s*|librt.so*|libpthread*|libdl.so*|ld-linux*) continue ;;
      libcuda*|libcublas*|libnccl*|libcudart*) continue ;;
    esac
    cp -Ln "$lib" "$dir/lib/" 2>/dev/null || true
  done
done
chmod -R u+w "$dir"
du -sh "$dir"
