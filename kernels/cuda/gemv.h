// Skinny products for decode (a few rows): y: [rows, n] = x: [rows, k] times
// w^T, with x and y f32 and w bf16 [n, k]. Memory-bound on w, so each warp
// streams one weight row with 16-byte loads and keeps every activation row's
// sum in registers; no cast of x, one fixed summation order per output.
#ifndef STRATA_KERNELS_CUDA_GEMV_H_
#define STRATA_KERNELS_CUDA_GEMV_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace strata::kernels::cuda {

constexpr int64_t kGemvMaxRows = 8;

// True when LaunchGemv takes this shape: 1 <= rows <= kGemvMaxRows, k % 8 == 0.
bool GemvSupports(int64_t rows, int64_t k);

cudaError_t LaunchGemv(const float* x, int64_t rows, const __nv_bfloat16* w, int64_t n, int64_t k,
                       float* y, cudaStream_t stream);

// Several weights that share the input x (q/k/v, gate/up) in one launch:
// y[i]: [rows, n[i]] = x times w[i]^T, every w[i] with k columns.
constexpr int kGemvMaxTargets = 3;
struct GemvTargets {
  int count = 0;
  const __nv_bfloat16* w[kGemvMaxTargets] = {};
  float* y[kGemvMaxTargets] = {};
  int64_t n[kGemvMaxTargets] = {};
};
cudaError_t LaunchGemvMulti(const float* x, int64_t rows, const GemvTargets& targets, int64_t k,
                            cudaStream_t stream);

}  // namespace strata::kernels::cuda

#endif  // STRATA_KERNELS_CUDA_GEMV_H_
