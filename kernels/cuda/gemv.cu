#include "kernels/cuda/gemv.h"

#include <algorithm>

namespace strata::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kUnroll = 4;  // 16-byte weight loads in flight per lane

// Streams a weight: read once, so it must not evict the activations from L1.
__device__ inline uint4 LoadStreaming(const __nv_bfloat16* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Each output row gets W warps that split k into W contiguous slices; a
// block of 8 warps covers 8 / W rows. Partial sums meet in shared memory and
// are added in warp order, so results do not depend on timing.
template <int ROWS, int W>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
GemvKernel(const float* __restrict__ x, GemvTargets targets, int64_t k) {
  __shared__ float partial[kWarpsPerBlock][ROWS];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  // Output index over the stacked targets, then which target holds it.
  int64_t out = static_cast<int64_t>(blockIdx.x) * (kWarpsPerBlock / W) + warp / W;
  // Constant indexes only: a run-time index would copy the parameters to
  // local memory in every thread.
  int64_t n = targets.n[0];
  const __nv_bfloat16* w = targets.w[0];
  float* y = targets.y[0];
#pragma unroll
  for (int i = 1; i < kGemvMaxTargets; ++i) {
    if (i < targets.count && out >= n) {
      out -= n;
      n = targets.n[i];
      w = targets.w[i];
      y = targets.y[i];
    }
  }
  const int part = warp % W;
  float acc[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) acc[r] = 0.0f;
  if (out < n) {
    const int64_t slice = (k / 8 + W - 1) / W * 8;  // multiple of 8 elements
    const int64_t begin = part * slice, end = min(k, begin + slice);
    const __nv_bfloat16* wr = w + out * k;
    auto fma8 = [&](const uint4& u, int64_t kk) {
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
    };
    int64_t kk = begin + lane * 8;
    for (; kk + (kUnroll - 1) * 256 < end; kk += kUnroll * 256) {
      uint4 u[kUnroll];
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) u[i] = LoadStreaming(wr + kk + i * 256);
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) fma8(u[i], kk + i * 256);
    }
    for (; kk < end; kk += 256) fma8(LoadStreaming(wr + kk), kk);
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    float v = acc[r];
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    acc[r] = v;
  }
  if (W == 1) {
    if (lane == 0 && out < n) {
#pragma unroll
      for (int r = 0; r < ROWS; ++r) y[r * n + out] = acc[r];
    }
    return;
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) partial[warp][r] = acc[r];
  }
  __syncthreads();
  if (part == 0 && lane < ROWS && out < n) {
    float v = 0.0f;
#pragma unroll
    for (int i = 0; i < W; ++i) v += partial[warp + i][lane];
    y[lane * n + out] = v;
  }
}

// Warps per output row: enough warps to fill the GPU, at least 2 KB of
// weights per warp. Depends only on (n, k), never on the rows.
int WarpsPerRow(int64_t n, int64_t k) {
  int w = 1;
  while (w < 8 && n * w < 132 * 64 && k / (2 * w) >= 1024) w *= 2;
  return w;
}

template <int ROWS, int W>
cudaError_t LaunchW(const float* x, const GemvTargets& t, int64_t total_n, int64_t k, cudaStream_t stream) {
  // Output rows are numbered across the targets; a block may span two.
  const int64_t rows_per_block = kWarpsPerBlock / W;
  const int64_t blocks = (total_n + rows_per_block - 1) / rows_per_block;
  GemvKernel<ROWS, W><<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(x, t, k);
  return cudaGetLastError();
}

template <int ROWS>
cudaError_t Launch(const float* x, const GemvTargets& t, int64_t total_n, int64_t k, cudaStream_t stream) {
  switch (WarpsPerRow(total_n, k)) {
    case 1: return LaunchW<ROWS, 1>(x, t, total_n, k, stream);
    case 2: return LaunchW<ROWS, 2>(x, t, total_n, k, stream);
    case 4: return LaunchW<ROWS, 4>(x, t, total_n, k, stream);
    default: return LaunchW<ROWS, 8>(x, t, total_n, k, stream);
  }
}

}  // namespace

bool GemvSupports(int64_t rows, int64_t k) { return rows >= 1 && rows <= kGemvMaxRows && k > 0 && k % 8 == 0; }

cudaError_t LaunchGemvMulti(const float* x, int64_t rows, const GemvTargets& t, int64_t k,
                            cudaStream_t stream) {
  if (!GemvSupports(rows, k) || t.count < 1 || t.count > kGemvMaxTargets) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0) return cudaErrorMisalignedAddress;
  int64_t total_n = 0;
  for (int i = 0; i < t.count; ++i) {
    if (t.n[i] <= 0) return cudaErrorInvalidValue;
    if (reinterpret_cast<uintptr_t>(t.w[i]) % 16 != 0) return cudaErrorMisalignedAddress;
    total_n += t.n[i];
  }
  if (total_n > (1ll << 30)) return cudaErrorInvalidValue;
  switch (rows) {
    case 1: return Launch<1>(x, t, total_n, k, stream);
    case 2: return Launch<2>(x, t, total_n, k, stream);
    case 3: return Launch<3>(x, t, total_n, k, stream);
    case 4: return Launch<4>(x, t, total_n, k, stream);
    case 5: return Launch<5>(x, t, total_n, k, stream);
    case 6: return Launch<6>(x, t, total_n, k, stream);
    case 7: return Launch<7>(x, t, total_n, k, stream);
    default: return Launch<8>(x, t, total_n, k, stream);
  }
}

cudaError_t LaunchGemv(const float* x, int64_t rows, const __nv_bfloat16* w, int64_t n, int64_t k,
                       float* y, cudaStream_t stream) {
  GemvTargets t;
  t.count = 1;
  t.w[0] = w;
  t.n[0] = n;
  t.y[0] = y;
  return LaunchGemvMulti(x, rows, t, k, stream);
}

}  // namespace strata::kernels::cuda
