#include "kernels/cuda/gemv.h"

namespace strata::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

template <int ROWS>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
GemvKernel(const float* __restrict__ x, const __nv_bfloat16* __restrict__ w, int64_t n, int64_t k,
           float* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t out = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (out >= n) return;
  const __nv_bfloat16* wr = w + out * k;
  float acc[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) acc[r] = 0.0f;
#pragma unroll 4
  for (int64_t kk = lane * 8; kk < k; kk += 32 * 8) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(wr + kk));
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
    float wf[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(h[i]);
      wf[2 * i] = f.x;
      wf[2 * i + 1] = f.y;
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(x + r * k + kk));
      const float4 b = __ldg(reinterpret_cast<const float4*>(x + r * k + kk + 4));
      acc[r] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3] + b.x * wf[4] + b.y * wf[5] +
                b.z * wf[6] + b.w * wf[7];
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    float v = acc[r];
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) y[r * n + out] = v;
  }
}

template <int ROWS>
cudaError_t Launch(const float* x, const __nv_bfloat16* w, int64_t n, int64_t k, float* y,
                   cudaStream_t stream) {
  const int64_t blocks = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  GemvKernel<ROWS><<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(x, w, n, k, y);
  return cudaGetLastError();
}

}  // namespace

bool GemvSupports(int64_t rows, int64_t k) { return rows >= 1 && rows <= kGemvMaxRows && k > 0 && k % 8 == 0; }

cudaError_t LaunchGemv(const float* x, int64_t rows, const __nv_bfloat16* w, int64_t n, int64_t k,
                       float* y, cudaStream_t stream) {
  if (!GemvSupports(rows, k) || n <= 0 || n > (1ll << 31) * kWarpsPerBlock) return cudaErrorInvalidValue;
  if ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w)) % 16 != 0) {
    return cudaErrorMisalignedAddress;
  }
  switch (rows) {
    case 1: return Launch<1>(x, w, n, k, y, stream);
    case 2: return Launch<2>(x, w, n, k, y, stream);
    case 3: return Launch<3>(x, w, n, k, y, stream);
    case 4: return Launch<4>(x, w, n, k, y, stream);
    case 5: return Launch<5>(x, w, n, k, y, stream);
    case 6: return Launch<6>(x, w, n, k, y, stream);
    case 7: return Launch<7>(x, w, n, k, y, stream);
    default: return Launch<8>(x, w, n, k, y, stream);
  }
}

}  // namespace strata::kernels::cuda
