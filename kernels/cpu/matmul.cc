#include "kernels/cpu/matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

constexpr int kNr = 4;  // weight rows per block

inline float Bf16(uint16_t h) { return model::BF16ToFloat(h); }

// ---- Portable twins -------------------------------------------------------

// Fixed pairwise tree over L lanes: halves, then quarters, ... (the order
// the SIMD reductions below use).
template <int L>
float TreeSum(float* lanes) {
  for (int width = L / 2; width >= 1; width /= 2) {
    for (int i = 0; i < width; ++i) lanes[i] = lanes[i] + lanes[i + width];
  }
  return lanes[0];
}

template <int L, typename W>
float DotLanesTwin(const float* x, const W* w, int64_t k) {
  float acc[L] = {};
  for (int64_t kk = 0; kk < k; kk += L) {
    for (int l = 0; l < L; ++l) {
      const bool in = kk + l < k;
      float wv;
      if constexpr (sizeof(W) == 2) {
        wv = in ? Bf16(w[kk + l]) : 0.0f;
      } else {
        wv = in ? w[kk + l] : 0.0f;
      }
      acc[l] = std::fma(in ? x[kk + l] : 0.0f, wv, acc[l]);
    }
  }
  return TreeSum<L>(acc);
}

// vdpbf16ps semantics: denormal inputs read as zero, each of the two
// products added with one rounding (odd element first), denormal results
// flushed to zero.
inline float Daz(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v; }

float DotBf16Twin(const uint16_t* x, const uint16_t* w, int64_t k) {
  float acc[16] = {};
  for (int64_t kk = 0; kk < k; kk += 32) {
    for (int l = 0; l < 16; ++l) {
      const int64_t e = kk + 2 * l, o = e + 1;
      const float xe = e < k ? Daz(Bf16(x[e])) : 0.0f, we = e < k ? Daz(Bf16(w[e])) : 0.0f;
      const float xo = o < k ? Daz(Bf16(x[o])) : 0.0f, wo = o < k ? Daz(Bf16(w[o])) : 0.0f;
      float a = Daz(acc[l]);
      a = Daz(std::fma(xo, wo, a));
      a = Daz(std::fma(xe, we, a));
      acc[l] = a;
    }
  }
  return TreeSum<16>(acc);
}

// ---- AVX2 (8 lanes) -------------------------------------------------------

__attribute__((target("avx2,fma"))) inline __m256 LoadW8(const uint16_t* w) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))), 16));
}
__attribute__((target("avx2,fma"))) inline __m256 LoadW8(const float* w) { return _mm256_loadu_ps(w); }

__attribute__((target("avx2,fma"))) inline float Reduce8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // i + i+4
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                          // i + i+2
  s = _mm_add_ss(s, _mm_movehdup_ps(s));                                           // 0 + 1
  return _mm_cvtss_f32(s);
}

template <int MR, int NR, typename W>
__attribute__((target("avx2,fma"))) void KernelAvx2(const float* x, int64_t k, const W* w, float* y,
                                                    int64_t ldy) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t kk = 0;
  for (; kk + 8 <= k; kk += 8) {
    __m256 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = LoadW8(w + j * k + kk);
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * k + kk);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (kk < k) {  // zero-padded tail, as the twin
    alignas(32) W wt[NR][8] = {};
    alignas(32) float xt[MR][8] = {};
    for (int j = 0; j < NR; ++j) std::memcpy(wt[j], w + j * k + kk, (k - kk) * sizeof(W));
    for (int i = 0; i < MR; ++i) std::memcpy(xt[i], x + i * k + kk, (k - kk) * sizeof(float));
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_load_ps(xt[i]);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, LoadW8(wt[j]), acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) y[i * ldy + j] = Reduce8(acc[i][j]);
}

// ---- AVX-512F (16 lanes) --------------------------------------------------

__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 LoadW16(const uint16_t* w) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w))), 16));
}
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 LoadW16(const float* w) {
  return _mm512_loadu_ps(w);
}
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 LoadW16Masked(const uint16_t* w, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w)), 16));
}
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 LoadW16Masked(const float* w, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, w);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) inline float Reduce16(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  const __m256 s8 = _mm256_add_ps(lo, hi);  // i + i+8
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));  // i + i+4
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                            // i + i+2
  s = _mm_add_ss(s, _mm_movehdup_ps(s));                                             // 0 + 1
  return _mm_cvtss_f32(s);
}

template <int MR, int NR, typename W>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void KernelAvx512(const float* x, int64_t k, const W* w,
                                                                       float* y, int64_t ldy) {
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t kk = 0;
  for (; kk + 16 <= k; kk += 16) {
    __m512 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = LoadW16(w + j * k + kk);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * k + kk);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (kk < k) {
    const __mmask16 m = static_cast<__mmask16>((1u << (k - kk)) - 1);
    __m512 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = LoadW16Masked(w + j * k + kk, m);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * k + kk);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) y[i * ldy + j] = Reduce16(acc[i][j]);
}

// ---- AVX-512 BF16 (16 lanes x 2 products) ---------------------------------

template <int MR, int NR>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void KernelBf16(const uint16_t* x, int64_t k,
                                                                                const uint16_t* w, float* y,
                                                                                int64_t ldy) {
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t kk = 0;
  for (; kk + 32 <= k; kk += 32) {
    __m512bh wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = (__m512bh)_mm512_loadu_si512(w + j * k + kk);
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i * k + kk);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
  if (kk < k) {
    const __mmask32 m = static_cast<__mmask32>((k - kk >= 32) ? ~0u : ((1u << (k - kk)) - 1));
    __m512bh wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = (__m512bh)_mm512_maskz_loadu_epi16(m, w + j * k + kk);
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x + i * k + kk);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) y[i * ldy + j] = Reduce16(acc[i][j]);
}

// ---- Blocking -------------------------------------------------------------

// Calls F<MR, NR>(row, col) over the [rows] x [n_begin, n_end) grid in
// blocks of up to kMr x kNr; the blocking never changes a result.
template <int kMr, typename F>
void ForBlocks(int64_t rows, int64_t n_begin, int64_t n_end, F&& f) {
  for (int64_t j = n_begin; j < n_end; j += kNr) {
    const int nr = static_cast<int>(std::min<int64_t>(kNr, n_end - j));
    for (int64_t i = 0; i < rows; i += kMr) {
      const int mr = static_cast<int>(std::min<int64_t>(kMr, rows - i));
      f(i, j, mr, nr);
    }
  }
}

// Dispatches runtime (mr, nr) to a template instance.
template <int MaxMr, template <int, int> class K, typename... Args>
void Dispatch(int mr, int nr, Args&&... args) {
  static_assert(MaxMr >= 1 && MaxMr <= 4, "block rows");
#define STRATA_NR(M)                                   \
  switch (nr) {                                        \
    case 1: K<M, 1>::Run(args...); break;              \
    case 2: K<M, 2>::Run(args...); break;              \
    case 3: K<M, 3>::Run(args...); break;              \
    default: K<M, 4>::Run(args...); break;             \
  }
  switch (mr) {
    case 1: STRATA_NR(1); break;
    case 2: if constexpr (MaxMr >= 2) { STRATA_NR(2); } break;
    case 3: if constexpr (MaxMr >= 3) { STRATA_NR(3); } break;
    default: if constexpr (MaxMr >= 4) { STRATA_NR(4); } break;
  }
#undef STRATA_NR
}

template <typename W>
struct Avx2Op {
  template <int MR, int NR>
  struct K {
    static void Run(const float* x, int64_t k, const W* w, float* y, int64_t ldy) {
      KernelAvx2<MR, NR, W>(x, k, w, y, ldy);
    }
  };
};
template <typename W>
struct Avx512Op {
  template <int MR, int NR>
  struct K {
    static void Run(const float* x, int64_t k, const W* w, float* y, int64_t ldy) {
      KernelAvx512<MR, NR, W>(x, k, w, y, ldy);
    }
  };
};
template <int MR, int NR>
struct Bf16K {
  static void Run(const uint16_t* x, int64_t k, const uint16_t* w, float* y, int64_t ldy) {
    KernelBf16<MR, NR>(x, k, w, y, ldy);
  }
};

template <typename W>
void RangeSimd(Isa isa, const MatMulArgs& a, const W* w, int64_t n_begin, int64_t n_end) {
  const int64_t k = a.k;
  if (isa == Isa::kAvx2) {
    ForBlocks<2>(a.rows, n_begin, n_end, [&](int64_t i, int64_t j, int mr, int nr) {
      Dispatch<2, Avx2Op<W>::template K>(mr, nr, a.x + i * k, k, w + j * k, a.y + i * a.n + j, a.n);
    });
  } else {
    ForBlocks<4>(a.rows, n_begin, n_end, [&](int64_t i, int64_t j, int mr, int nr) {
      Dispatch<4, Avx512Op<W>::template K>(mr, nr, a.x + i * k, k, w + j * k, a.y + i * a.n + j, a.n);
    });
  }
}

}  // namespace

Isa EffectiveIsa(Isa isa, bool bf16_weights) {
  if (isa == Isa::kAvx512Bf16 && !bf16_weights) return Isa::kAvx512;
  return isa;
}

void ToBf16(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = model::FloatToBF16(x[i]);
}

void MatMulRange(Isa isa, const MatMulArgs& a, int64_t n_begin, int64_t n_end) {
  isa = EffectiveIsa(isa, a.w_bf16 != nullptr);
  if (isa == Isa::kPortable) {
    MatMulRangeTwin(isa, a, n_begin, n_end);
  } else if (isa == Isa::kAvx512Bf16) {
    const int64_t k = a.k;
    ForBlocks<4>(a.rows, n_begin, n_end, [&](int64_t i, int64_t j, int mr, int nr) {
      Dispatch<4, Bf16K>(mr, nr, a.xb + i * k, k, a.w_bf16 + j * k, a.y + i * a.n + j, a.n);
    });
  } else if (a.w_bf16) {
    RangeSimd<uint16_t>(isa, a, a.w_bf16, n_begin, n_end);
  } else {
    RangeSimd<float>(isa, a, a.w_f32, n_begin, n_end);
  }
}

void MatMulRangeTwin(Isa isa, const MatMulArgs& a, int64_t n_begin, int64_t n_end) {
  isa = EffectiveIsa(isa, a.w_bf16 != nullptr);
  const int64_t k = a.k;
  for (int64_t j = n_begin; j < n_end; ++j) {
    for (int64_t i = 0; i < a.rows; ++i) {
      float v;
      if (isa == Isa::kAvx512Bf16) {
        v = DotBf16Twin(a.xb + i * k, a.w_bf16 + j * k, k);
      } else if (isa == Isa::kAvx2) {
        v = a.w_bf16 ? DotLanesTwin<8>(a.x + i * k, a.w_bf16 + j * k, k)
                     : DotLanesTwin<8>(a.x + i * k, a.w_f32 + j * k, k);
      } else {
        v = a.w_bf16 ? DotLanesTwin<16>(a.x + i * k, a.w_bf16 + j * k, k)
                     : DotLanesTwin<16>(a.x + i * k, a.w_f32 + j * k, k);
      }
      a.y[i * a.n + j] = v;
    }
  }
}

}  // namespace strata::kernels::cpu
