#include "kernels/cuda/rmsnorm.h"

namespace strata::kernels::cuda {
namespace {

__device__ inline float ToFloat(float v) { return v; }
__device__ inline float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ inline T FromFloat(float v);
template <>
__device__ inline float FromFloat<float>(float v) { return v; }
template <>
__device__ inline __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

constexpr int kThreads = 1024;

template <typename T>
__global__ void RmsNormKernel(const T* __restrict__ x, const T* __restrict__ residual,
                              T* residual_out, const __nv_bfloat16* __restrict__ w, float eps,
                              int64_t dim, T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * dim;
  const T* rr = residual ? residual + row * dim : nullptr;
  T* ro = residual_out ? residual_out + row * dim : nullptr;
  float sum_sq = 0.0f;
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float h = ToFloat(xr[i]);
    if (rr) h += ToFloat(rr[i]);
    if (ro) ro[i] = FromFloat<T>(h);
    sum_sq += h * h;
  }
  // Block reduction: warp shuffles, then one warp over the warp sums.
  __shared__ float warp_sums[32];
  for (int offset = 16; offset > 0; offset /= 2) sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum_sq;
  __syncthreads();
  __shared__ float inv_rms;
  if (threadIdx.x < 32) {
    float s = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0.0f;  // blockDim <= 1024
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (threadIdx.x == 0) inv_rms = rsqrtf(s / static_cast<float>(dim) + eps);
  }
  __syncthreads();
  // Re-read h (from residual_out when written, which may alias x).
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float h = ro ? ToFloat(ro[i]) : ToFloat(xr[i]) + (rr ? ToFloat(rr[i]) : 0.0f);
    out[row * dim + i] = FromFloat<T>(__bfloat162float(w[i]) * (h * inv_rms));
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchRmsNorm(const T* x, const T* residual, T* residual_out, const __nv_bfloat16* w,
                          float eps, int64_t rows, int64_t dim, T* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows < 0 || dim <= 0 || rows > 0x7fffffff) return cudaErrorInvalidValue;
  RmsNormKernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, residual, residual_out,
                                                                          w, eps, dim, out);
  return cudaGetLastError();
}

template cudaError_t LaunchRmsNorm<float>(const float*, const float*, float*, const __nv_bfloat16*,
                                          float, int64_t, int64_t, float*, cudaStream_t);
template cudaError_t LaunchRmsNorm<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                  __nv_bfloat16*, const __nv_bfloat16*, float,
                                                  int64_t, int64_t, __nv_bfloat16*, cudaStream_t);

}  // namespace strata::kernels::cuda
