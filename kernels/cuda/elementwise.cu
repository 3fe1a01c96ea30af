#include "kernels/cuda/elementwise.h"

#include <algorithm>

namespace strata::kernels::cuda {
namespace {

constexpr int kThreads = 256;

unsigned GridFor(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20));
}

__global__ void EmbedKernel(const __nv_bfloat16* __restrict__ table, int64_t vocab, int64_t cols,
                            const int32_t* __restrict__ ids, int64_t n, float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const int32_t id = ids[r];
    out[i] = (id >= 0 && id < vocab) ? __bfloat162float(table[id * cols + c]) : 0.0f;
  }
}

// One thread per (row, head, pair i); the pair is (i, i + half).
__global__ void RopeKernel(float* __restrict__ x, int64_t rows, int64_t heads, int64_t head_dim,
                           const int64_t* __restrict__ positions, const float* __restrict__ inv_freq) {
  const int64_t half = head_dim / 2;
  const int64_t total = rows * heads * half;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = i % half;
    const int64_t rh = i / half;
    const int64_t r = rh / heads;
    const float angle = static_cast<float>(positions[r]) * inv_freq[p];
    float s, c;
    sincosf(angle, &s, &c);  // full-precision range reduction (no fast math)
    float* head = x + rh * head_dim;
    const float a = head[p], b = head[p + half];
    head[p] = a * c - b * s;
    head[p + half] = b * c + a * s;
  }
}

__global__ void WriteKvKernel(const float* __restrict__ k, const float* __restrict__ v, int64_t rows,
                              int64_t width, const int64_t* __restrict__ slots,
                              __nv_bfloat16* __restrict__ k_cache, __nv_bfloat16* __restrict__ v_cache) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * width;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / width, c = i % width;
    const int64_t dst = slots[r] * width + c;
    k_cache[dst] = __float2bfloat16(k[i]);
    v_cache[dst] = __float2bfloat16(v[i]);
  }
}

__global__ void SwiGluKernel(const float* __restrict__ gate, const float* __restrict__ up, int64_t n,
                             float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void AddKernel(float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] += y[i];
  }
}

__global__ void GatherRowsKernel(const float* __restrict__ x, int64_t cols,
                                 const int64_t* __restrict__ row_ids, int64_t n,
                                 float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    out[i] = x[row_ids[r] * cols + c];
  }
}

__global__ void CastKernel(const float* __restrict__ x, int64_t n, __nv_bfloat16* __restrict__ out) {
  const int64_t pairs = n / 2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float2 v = reinterpret_cast<const float2*>(x)[i];
    reinterpret_cast<__nv_bfloat162*>(out)[i] = __floats2bfloat162_rn(v.x, v.y);
  }
  if (n % 2 == 1 && blockIdx.x == 0 && threadIdx.x == 0) out[n - 1] = __float2bfloat16(x[n - 1]);
}

__device__ inline float HashUniform(int64_t i, uint32_t seed) {
  uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed ^ static_cast<uint32_t>(i >> 32) * 40503u;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  x ^= x >> 15;
  return (x & 0xFFFFFF) / 8388608.0f - 1.0f;
}

template <typename T>
__global__ void FillKernel(T* x, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = static_cast<T>(scale * HashUniform(i, seed));
  }
}

}  // namespace

cudaError_t LaunchFillRandom(float* x, int64_t n, uint32_t seed, float scale, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  FillKernel<float><<<GridFor(n), kThreads, 0, stream>>>(x, n, seed, scale);
  return cudaGetLastError();
}

cudaError_t LaunchFillRandom(__nv_bfloat16* x, int64_t n, uint32_t seed, float scale,
                             cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  FillKernel<__nv_bfloat16><<<GridFor(n), kThreads, 0, stream>>>(x, n, seed, scale);
  return cudaGetLastError();
}

cudaError_t LaunchEmbed(const __nv_bfloat16* table, int64_t vocab, int64_t cols, const int32_t* ids,
                        int64_t n, float* out, cudaStream_t stream) {
  if (n < 0 || cols <= 0 || vocab <= 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  EmbedKernel<<<GridFor(n * cols), kThreads, 0, stream>>>(table, vocab, cols, ids, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchRope(float* x, int64_t rows, int64_t heads, int64_t head_dim,
                       const int64_t* positions, const float* inv_freq, cudaStream_t stream) {
  if (rows < 0 || heads <= 0 || head_dim <= 0 || head_dim % 2 != 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  RopeKernel<<<GridFor(rows * heads * head_dim / 2), kThreads, 0, stream>>>(x, rows, heads, head_dim,
                                                                           positions, inv_freq);
  return cudaGetLastError();
}

cudaError_t LaunchWriteKv(const float* k, const float* v, int64_t rows, int64_t width,
                          const int64_t* slots, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache,
                          cudaStream_t stream) {
  if (rows < 0 || width <= 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  WriteKvKernel<<<GridFor(rows * width), kThreads, 0, stream>>>(k, v, rows, width, slots, k_cache,
                                                               v_cache);
  return cudaGetLastError();
}

cudaError_t LaunchSwiGlu(const float* gate, const float* up, int64_t n, float* out,
                         cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  SwiGluKernel<<<GridFor(n), kThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  AddKernel<<<GridFor(n), kThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const float* x, int64_t cols, const int64_t* row_ids, int64_t n,
                             float* out, cudaStream_t stream) {
  if (n < 0 || cols <= 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  GatherRowsKernel<<<GridFor(n * cols), kThreads, 0, stream>>>(x, cols, row_ids, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchCastToBf16(const float* x, int64_t n, __nv_bfloat16* out, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  // float2 / bfloat162 accesses need 8- and 4-byte alignment.
  if (reinterpret_cast<uintptr_t>(x) % 8 != 0 || reinterpret_cast<uintptr_t>(out) % 4 != 0) {
    return cudaErrorMisalignedAddress;
  }
  CastKernel<<<GridFor(std::max<int64_t>(n / 2, 1)), kThreads, 0, stream>>>(x, n, out);
  return cudaGetLastError();
}

}  // namespace strata::kernels::cuda
