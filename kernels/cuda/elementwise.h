// The small GPU ops of a decoder step: embedding gather, RoPE, KV-cache
// write, SwiGLU, residual add, row gather and the f32 -> bf16 cast that
// feeds the GEMMs. Activations are f32 [rows, width] in device memory;
// weights and the KV cache are bf16. Every launcher checks its sizes and
// returns the launch error.
#ifndef STRATA_KERNELS_CUDA_ELEMENTWISE_H_
#define STRATA_KERNELS_CUDA_ELEMENTWISE_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace strata::kernels::cuda {

// out: [n, cols] = table[ids[i]] (bf16 table [vocab, cols]); ids: device [n].
// Ids outside [0, vocab) give zero rows (the caller validates them first).
cudaError_t LaunchEmbed(const __nv_bfloat16* table, int64_t vocab, int64_t cols, const int32_t* ids,
                        int64_t n, float* out, cudaStream_t stream);

// x: [rows, heads, head_dim] rotated in place (rotate_half) at positions[row];
// inv_freq: device [head_dim / 2]. Angles are float(position) * inv_freq,
// as in model/rope.cc.
cudaError_t LaunchRope(float* x, int64_t rows, int64_t heads, int64_t head_dim,
                       const int64_t* positions, const float* inv_freq, cudaStream_t stream);

// Writes k, v: [rows, width] (width = kv_heads * head_dim) as bf16 into the
// cache rows slots[row] of k_cache, v_cache: [slots, width].
cudaError_t LaunchWriteKv(const float* k, const float* v, int64_t rows, int64_t width,
                          const int64_t* slots, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache,
                          cudaStream_t stream);

// out = silu(gate) * up over n floats.
cudaError_t LaunchSwiGlu(const float* gate, const float* up, int64_t n, float* out,
                         cudaStream_t stream);

// x += y over n floats.
cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream);

// out: [n, cols] = rows row_ids (device [n]) of x.
cudaError_t LaunchGatherRows(const float* x, int64_t cols, const int64_t* row_ids, int64_t n,
                             float* out, cudaStream_t stream);

// out = bf16(x) over n values (round to nearest even).
cudaError_t LaunchCastToBf16(const float* x, int64_t n, __nv_bfloat16* out, cudaStream_t stream);

// Fills n values with a hash of (index, seed) scaled to [-scale, scale): fast
// reproducible data for benchmarks and large tests.
cudaError_t LaunchFillRandom(float* x, int64_t n, uint32_t seed, float scale, cudaStream_t stream);
cudaError_t LaunchFillRandom(__nv_bfloat16* x, int64_t n, uint32_t seed, float scale,
                             cudaStream_t stream);

}  // namespace strata::kernels::cuda

#endif  // STRATA_KERNELS_CUDA_ELEMENTWISE_H_
