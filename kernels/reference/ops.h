// The plain float32 reference of every op: readable loops, one fixed
// summation order, no tricks. It is the oracle the fast CPU and CUDA kernels
// are tested against, and the math of the reference backend.
#ifndef STRATA_KERNELS_REFERENCE_OPS_H_
#define STRATA_KERNELS_REFERENCE_OPS_H_

#include <cstdint>
#include <vector>

#include "kernels/step_layout.h"

namespace strata::kernels::reference {

// out: [n, cols] = table[ids[i]]; table: [rows, cols]. Ids outside [0, rows)
// give zero rows (a vocab-parallel rank's ids owned by another rank).
void Embed(const float* table, int64_t rows, int64_t cols, const int32_t* ids, int64_t n, float* out);

// out = x * rsqrt(mean(x^2) + eps) * w; x, out: [rows, dim]; w: [dim].
void RmsNorm(const float* x, const float* w, float eps, int64_t rows, int64_t dim, float* out);

// y: [rows, out_features] = x: [rows, in_features] * w^T; w: [out_features, in_features].
// Rows of w in [out_begin, out_end) only (for splitting across threads).
void MatMul(const float* x, int64_t rows, const float* w, int64_t in_features,
            int64_t out_features, int64_t out_begin, int64_t out_end, float* y);

// Cache index -> RoPE position of every row in the step: [NumRows()].
std::vector<int64_t> RowPositions(const StepLayout& layout);

// x: [rows, heads, head_dim] rotated in place at positions[row].
void Rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, const int64_t* positions,
          const std::vector<float>& inv_freq);

// Paged KV storage of one layer: [num_blocks, block_size, kv_heads, head_dim].
// Writes k, v: [step rows, kv_heads, head_dim] at each row's cache index.
void WriteKv(const StepLayout& layout, const KvCacheShape& shape, const float* k, const float* v,
             float* k_cache, float* v_cache);

// Causal GQA attention over the paged cache; softmax scale 1/sqrt(head_dim).
// q, out: [step rows, q_heads, head_dim]. q_heads % kv_heads == 0.
void Attention(const StepLayout& layout, const KvCacheShape& shape, const float* k_cache,
               const float* v_cache, const float* q, int64_t q_heads, float* out);

// out = silu(gate) * up over n floats.
void SwiGlu(const float* gate, const float* up, int64_t n, float* out);

}  // namespace strata::kernels::reference

#endif  // STRATA_KERNELS_REFERENCE_OPS_H_
