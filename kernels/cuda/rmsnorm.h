// Fused RMSNorm on the GPU, optionally adding a residual first:
//   h = x (+ residual);  residual_out = h;  out = h * rsqrt(mean(h^2) + eps) * w
// One thread block per row, float accumulation.
#ifndef STRATA_KERNELS_CUDA_RMSNORM_H_
#define STRATA_KERNELS_CUDA_RMSNORM_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace strata::kernels::cuda {

// x, residual, residual_out, out: device [rows, dim]; w: device [dim] bf16.
// residual and residual_out may be null (plain RMSNorm); residual_out may
// alias x. T is float or __nv_bfloat16.
template <typename T>
cudaError_t LaunchRmsNorm(const T* x, const T* residual, T* residual_out, const __nv_bfloat16* w,
                          float eps, int64_t rows, int64_t dim, T* out, cudaStream_t stream);

}  // namespace strata::kernels::cuda

#endif  // STRATA_KERNELS_CUDA_RMSNORM_H_
