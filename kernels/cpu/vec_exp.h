// exp(x) in float32 for 16 lanes at once (AVX-512F) and its scalar twin,
// bit for bit the same: both do the same IEEE operations in the same order
// (Cody-Waite reduction x = n ln2 + r, a degree-7 Horner polynomial for
// e^r as fused multiply-adds, then y * 2^n), so a kernel that takes the
// vector path and a test or fallback that takes the scalar one agree
// exactly. std::exp per element was most of the tile softmax and of SwiGLU
// (docs/benchmarks.md).
//
// Accuracy: within 2 ulp of exp over [-87, 88]. Outside it, and for NaN,
// the result is 0 below -87 (exp(-87) is 1.6e-38: nothing a softmax or a
// sigmoid can see) and +inf above 88.
#ifndef STRATA_KERNELS_CPU_VEC_EXP_H_
#define STRATA_KERNELS_CPU_VEC_EXP_H_

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace strata::kernels::cpu {

namespace vec_exp_internal {
constexpr float kLo = -87.0f, kHi = 88.0f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
// Taylor-like coefficients of e^r on |r| <= ln2 / 2 (Cephes expf), then 1, 1.
constexpr float kC[8] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f,
                         1.6666665459e-1f, 5.0000001201e-1f, 1.0f,             1.0f};
}  // namespace vec_exp_internal

// The scalar twin. Hardware FMA or not, std::fma rounds once, so the bits
// do not depend on the build's target.
inline float ExpScalar(float x) {
  using namespace vec_exp_internal;
  if (!(x >= kLo)) return 0.0f;
  if (x > kHi) return INFINITY;
  const float n = std::nearbyint(x * kLog2e);
  float r = std::fma(n, -kLn2Hi, x);
  r = std::fma(n, -kLn2Lo, r);
  float p = kC[0];
  for (int i = 1; i < 8; ++i) p = std::fma(p, r, kC[i]);
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

__attribute__((target("avx512f"))) inline __m512 Exp16(__m512 x) {
  using namespace vec_exp_internal;
  const __mmask16 ok = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kLo), _CMP_GE_OQ);
  const __mmask16 big = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kHi), _CMP_GT_OQ);
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(kLo)), _mm512_set1_ps(kHi));
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Hi), xc);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kC[0]);
  for (int i = 1; i < 8; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC[i]));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  const __m512 y = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
  return _mm512_mask_blend_ps(big, _mm512_maskz_mov_ps(ok, y), _mm512_set1_ps(INFINITY));
}

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_VEC_EXP_H_
