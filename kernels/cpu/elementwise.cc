#include "kernels/cpu/elementwise.h"

#include <immintrin.h>

#include "kernels/cpu/vec_exp.h"

namespace strata::kernels::cpu {
namespace {

inline float SiluTimes(float g, float u) { return g / (1.0f + ExpScalar(-g)) * u; }

__attribute__((target("avx512f"))) void SwiGluAvx512(const float* gate, const float* up, int64_t n, float* out) {
  const __m512 one = _mm512_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = SiluTimes(gate[i], up[i]);
}

}  // namespace

void SwiGlu(bool avx512, const float* gate, const float* up, int64_t n, float* out) {
  if (avx512) {
    SwiGluAvx512(gate, up, n, out);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = SiluTimes(gate[i], up[i]);
}

}  // namespace strata::kernels::cpu
