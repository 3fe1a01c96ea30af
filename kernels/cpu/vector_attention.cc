#include "kernels/cpu/vector_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/lanes.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

// Sums keep 16 independent lanes and end with TreeSum<16>: they vectorize
// without reassociation and give the same bits on every ISA clone.
#define STRATA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

inline float ToF(uint16_t h) { return model::BF16ToFloat(h); }
inline float ToF(float f) { return f; }

// scores[g * visible + j] = dot(q_g, K_j) * scale, where key j's row is
// base + slots[j] * stride.
// The dot is the 16-lane scheme of SumSquares() (lanes, then TreeSum), so it
// is the same on every ISA. kD > 0: head_dim known at compile time (64 and
// 128 get fully unrolled loops); 0: run-time d.
template <int kD, typename T>
__attribute__((always_inline)) inline void ScoreBody(const float* q, int64_t group, int64_t d_rt, const T* base,
                                                     const int64_t* slots, int64_t stride, int64_t visible,
                                                     float scale, float* scores, int64_t ld) {
  const int64_t d = kD > 0 ? kD : d_rt;
  float krow[kMaxHeadDim];
  for (int64_t j = 0; j < visible; ++j) {
    const T* kr = base + slots[j] * stride;
    for (int64_t i = 0; i < d; ++i) krow[i] = ToF(kr[i]);
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = q + g * d;
      float lanes[16] = {};
      int64_t i = 0;
      for (; i + 16 <= d; i += 16)
        for (int l = 0; l < 16; ++l) lanes[l] += qg[i + l] * krow[i + l];
      if (kD == 0 || kD % 16 != 0) {
        for (int l = 0; i + l < d; ++l) lanes[l] += qg[i + l] * krow[i + l];
      }
      scores[g * ld + j] = TreeSum<16>(lanes) * scale;
    }
  }
}

// out_g += p[g * visible + j] * V_j over the keys, in key order.
template <int kD, typename T>
__attribute__((always_inline)) inline void ValueBody(const float* p, int64_t group, int64_t d_rt, const T* base,
                                                     const int64_t* slots, int64_t stride, int64_t visible,
                                                     float* out) {
  const int64_t d = kD > 0 ? kD : d_rt;
  float vrow[kMaxHeadDim];
  for (int64_t j = 0; j < visible; ++j) {
    const T* vr = base + slots[j] * stride;
    for (int64_t i = 0; i < d; ++i) vrow[i] = ToF(vr[i]);
    for (int64_t g = 0; g < group; ++g) {
      const float pj = p[g * visible + j];
      float* o = out + g * d;
      for (int64_t i = 0; i < d; ++i) o[i] += pj * vrow[i];
    }
  }
}

#define STRATA_BY_HEAD_DIM(Body, ...)     \
  switch (d) {                            \
    case 64: Body<64>(__VA_ARGS__); break;   \
    case 128: Body<128>(__VA_ARGS__); break; \
    default: Body<0>(__VA_ARGS__); break;    \
  }

STRATA_CLONES void ScoreKeys(const float* q, int64_t group, int64_t d, const uint16_t* base, const int64_t* slots,
                             int64_t stride, int64_t visible, float scale, float* scores, int64_t ld) {
  STRATA_BY_HEAD_DIM(ScoreBody, q, group, d, base, slots, stride, visible, scale, scores, ld)
}
STRATA_CLONES void ScoreKeys(const float* q, int64_t group, int64_t d, const float* base, const int64_t* slots,
                             int64_t stride, int64_t visible, float scale, float* scores, int64_t ld) {
  STRATA_BY_HEAD_DIM(ScoreBody, q, group, d, base, slots, stride, visible, scale, scores, ld)
}

// ---- AVX-512 scores, 16 keys at a time ------------------------------------
// The same numbers as ScoreBody, bit for bit: each key's 16 lanes are
// accumulated in the same order (multiply, then add: the backend builds
// with -ffp-contract=off), and TreeSum's pairwise steps (lane i + lane
// i + width, width 8, 4, 2, 1) run for 16 keys at once on shuffled
// vectors instead of one horizontal sum per score, which dominated decode
// attention (one 16-lane reduction per key and query head).

__attribute__((target("avx512f"))) inline __m512 LoadRow16(const uint16_t* p) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
__attribute__((target("avx512f"))) inline __m512 LoadRow16(const float* p) { return _mm512_loadu_ps(p); }

// a[j]: the 16 lanes of key j; returns TreeSum of each, key j in lane j.
__attribute__((target("avx512f"))) inline __m512 TreeSum16Keys(const __m512* a) {
  __m512 b[8], c[4], e[2];
  for (int m = 0; m < 8; ++m) {  // width 8: keys 2m | 2m+1, 8 partials each
    b[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * m], a[2 * m + 1], 0x44),
                         _mm512_shuffle_f32x4(a[2 * m], a[2 * m + 1], 0xEE));
  }
  for (int n = 0; n < 4; ++n) {  // width 4: one key per 128-bit quarter
    c[n] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * n], b[2 * n + 1], 0x88),
                         _mm512_shuffle_f32x4(b[2 * n], b[2 * n + 1], 0xDD));
  }
  for (int t = 0; t < 2; ++t) {  // width 2: quarter q holds keys 8t+q, 8t+4+q
    e[t] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * t], c[2 * t + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(c[2 * t], c[2 * t + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // width 1: lane 4q + m holds key 4m + q.
  const __m512 f = _mm512_add_ps(_mm512_shuffle_ps(e[0], e[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(e[0], e[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, f);
}

template <int kD, typename T>
__attribute__((target("avx512f"))) void ScoreKeys16(const float* q, int64_t group, const T* base,
                                                    const int64_t* slots, int64_t stride, int64_t visible,
                                                    float scale, float* scores) {
  static_assert(kD % 16 == 0 && kD <= kMaxHeadDim);
  constexpr int kSteps = kD / 16;
  const __m512 vscale = _mm512_set1_ps(scale);
  int64_t j0 = 0;
  for (; j0 + 16 <= visible; j0 += 16) {
    __m512 k[16][kSteps];
    for (int j = 0; j < 16; ++j) {
      const T* kr = base + slots[j0 + j] * stride;
      for (int i = 0; i < kSteps; ++i) k[j][i] = LoadRow16(kr + 16 * i);
    }
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = q + g * kD;
      __m512 qv[kSteps];
      for (int i = 0; i < kSteps; ++i) qv[i] = _mm512_loadu_ps(qg + 16 * i);
      __m512 acc[16];
      for (int j = 0; j < 16; ++j) {
        acc[j] = _mm512_add_ps(_mm512_setzero_ps(), _mm512_mul_ps(qv[0], k[j][0]));
        for (int i = 1; i < kSteps; ++i) acc[j] = _mm512_add_ps(acc[j], _mm512_mul_ps(qv[i], k[j][i]));
      }
      _mm512_storeu_ps(scores + g * visible + j0, _mm512_mul_ps(TreeSum16Keys(acc), vscale));
    }
  }
  if (j0 < visible) {
    ScoreBody<kD>(q, group, kD, base, slots + j0, stride, visible - j0, scale, scores + j0, visible);
  }
}

// Scores through the 16-key path where the ISA and head_dim allow it.
template <typename T>
void Scores(bool avx512, const float* q, int64_t group, int64_t d, const T* base, const int64_t* slots,
            int64_t stride, int64_t visible, float scale, float* scores) {
  if (avx512 && d == 64) {
    ScoreKeys16<64>(q, group, base, slots, stride, visible, scale, scores);
  } else if (avx512 && d == 128) {
    ScoreKeys16<128>(q, group, base, slots, stride, visible, scale, scores);
  } else {
    ScoreKeys(q, group, d, base, slots, stride, visible, scale, scores, visible);
  }
}
STRATA_CLONES void AccumulateValues(const float* p, int64_t group, int64_t d, const uint16_t* base,
                                    const int64_t* slots, int64_t stride, int64_t visible, float* out) {
  STRATA_BY_HEAD_DIM(ValueBody, p, group, d, base, slots, stride, visible, out)
}
STRATA_CLONES void AccumulateValues(const float* p, int64_t group, int64_t d, const float* base,
                                    const int64_t* slots, int64_t stride, int64_t visible, float* out) {
  STRATA_BY_HEAD_DIM(ValueBody, p, group, d, base, slots, stride, visible, out)
}


template <typename T>
void Attend(bool avx512, const float* q, int64_t group, int64_t d, const T* k, const T* v, const int64_t* slots,
            int64_t stride, int64_t visible, float scale, std::vector<float>& scores, float* out) {
  scores.resize(group * visible);
  Scores(avx512, q, group, d, k, slots, stride, visible, scale, scores.data());
  for (int64_t g = 0; g < group; ++g) {
    float* sg = scores.data() + g * visible;
    float mx = -INFINITY;
    for (int64_t j = 0; j < visible; ++j) mx = std::max(mx, sg[j]);
    float sum = 0.0f;
    for (int64_t j = 0; j < visible; ++j) {
      sg[j] = std::exp(sg[j] - mx);
      sum += sg[j];
    }
    for (int64_t j = 0; j < visible; ++j) sg[j] = sg[j] / sum;
    for (int64_t i = 0; i < d; ++i) out[g * d + i] = 0.0f;
  }
  AccumulateValues(scores.data(), group, d, v, slots, stride, visible, out);
}

}  // namespace

void AttendOneToken(bool avx512, const float* q, int64_t group, int64_t d, const uint16_t* k, const uint16_t* v,
                    const int64_t* slots, int64_t stride, int64_t visible, float scale, std::vector<float>& scores,
                    float* out) {
  Attend(avx512, q, group, d, k, v, slots, stride, visible, scale, scores, out);
}

void AttendOneToken(bool avx512, const float* q, int64_t group, int64_t d, const float* k, const float* v,
                    const int64_t* slots, int64_t stride, int64_t visible, float scale, std::vector<float>& scores,
                    float* out) {
  Attend(avx512, q, group, d, k, v, slots, stride, visible, scale, scores, out);
}

}  // namespace strata::kernels::cpu
