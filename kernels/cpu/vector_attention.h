// The vector kernels of causal GQA attention over the paged KV cache (bf16
// or f32), the CPU backend's attention on every ISA but amx (whose rows go
// to tiles, amx_attention.h). One task is one new token and one KV head:
// it serves the whole query group, reading each K and V row once.
//
// Scores are dot products in the 16-lane scheme (lanes, then TreeSum), the
// softmax takes max, exp, sum and divides in key order, and the values
// are added in key order, so a token's output depends on its own keys
// only, and is the same bits on every ISA (the AVX-512 16-key score path
// reduces 16 keys at once in TreeSum's order; cpu_backend_test compares
// every ISA's output exactly).
#ifndef STRATA_KERNELS_CPU_VECTOR_ATTENTION_H_
#define STRATA_KERNELS_CPU_VECTOR_ATTENTION_H_

#include <cstdint>
#include <vector>

namespace strata::kernels::cpu {

// Largest head_dim the CPU attention supports (a row lives on the stack).
constexpr int64_t kMaxHeadDim = 256;

// One (token, KV head): q: [group, d] (the group's query heads, after
// RoPE); key j's K row at k + slots[j] * stride, its V row at v + slots[j]
// * stride (T: uint16_t for bf16, or float), j < visible; out: [group, d].
// avx512: the 16-key score path where d is 64 or 128 (requires AVX-512F;
// same bits). scores: the caller's per-thread buffer, grown as needed.
void AttendOneToken(bool avx512, const float* q, int64_t group, int64_t d, const uint16_t* k, const uint16_t* v,
                    const int64_t* slots, int64_t stride, int64_t visible, float scale, std::vector<float>& scores,
                    float* out);
void AttendOneToken(bool avx512, const float* q, int64_t group, int64_t d, const float* k, const float* v,
                    const int64_t* slots, int64_t stride, int64_t visible, float scale, std::vector<float>& scores,
                    float* out);

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_VECTOR_ATTENTION_H_
