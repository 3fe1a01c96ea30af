# The GPU test binaries and the benchmark, as bazel-bin paths; sourced by
# run.sh and bundle.sh so both use one list.
GPU_TESTS=(kernels/cuda/rmsnorm_test kernels/cuda/attention_test kernels/cuda/ops_test
           worker/nccl_communicator_test tests/gpu/cuda_engine_test)
GPU_BENCH=kernels/cuda/cuda_bench

# Bazel labels of the given bazel-bin paths.
gpu_labels() {
  local t
  for t in "$@"; do echo "//${t%/*}:${t##*/}"; done
}
