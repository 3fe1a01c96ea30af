#include "kernels/cpu/matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/amx_matmul.h"
#include "kernels/cpu/lanes.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

constexpr int kNr = 4;  // weight rows per block (8 for 2-4 activation rows)

// Prefetches the cache line at p into L2. Volatile asm on purpose: GCC 12
// treats _mm_prefetch as free of side effects and had deleted every one of
// them from these kernels (no prefetch instruction was left in the binary;
// the per-stream prefetch once credited for batch-1 decode never ran).
inline void PrefetchL2(const char* p) { asm volatile("prefetcht1 %0" : : "m"(*p)); }

// How far ahead of its loads a one-row product prefetches its own weight
// stream (see BlockedBf16).
constexpr int64_t kStreamPrefetchBytes = 32 << 10;

// Whether products of 1-4 activation rows (decode) prefetch in software.
// On Intel Xeons the hardware prefetcher alone left batch-1 decode at
// 72-79% of the read bandwidth; on AMD EPYC it reaches 90% and more
// without help (docs/benchmarks.md), so there the choice is measured, not
// assumed. Prefetches never change a result.
bool PrefetchSmallProducts() {
  static const bool on = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") != 0;
  }();
  return on;
}

// Row j (0 <= j < 8, spanning two packed blocks), column kk, of the
// packed rows starting at w (a block start); k is the row length.
// Values in one packed block (4 weight rows over all of k, k rounded up).
inline int64_t BlockElems(int64_t k) { return (k + kPackCols - 1) / kPackCols * kPackRows * kPackCols; }

template <typename W>
inline const W* At(const W* w, int j, int64_t kk, int64_t k) {
  const int64_t block = BlockElems(k);
  return w + (j / kPackRows) * block + ((kk / kPackCols) * kPackRows + j % kPackRows) * kPackCols + kk % kPackCols;
}

inline float Bf16(uint16_t h) { return model::BF16ToFloat(h); }

// ---- Portable twins -------------------------------------------------------

// w: packed matrix; row: which weight row.
template <int L, typename W>
float DotLanesTwin(const float* x, const W* w, int64_t row, int64_t k) {
  float acc[L] = {};
  for (int64_t kk = 0; kk < k; kk += L) {
    for (int l = 0; l < L; ++l) {
      const bool in = kk + l < k;
      float wv;
      if constexpr (sizeof(W) == 2) {
        wv = in ? Bf16(w[PackedIndex(row, kk + l, k)]) : 0.0f;
      } else {
        wv = in ? w[PackedIndex(row, kk + l, k)] : 0.0f;
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

float DotBf16Twin(const uint16_t* x, const uint16_t* w, int64_t row, int64_t k) {
  float acc[16] = {};
  for (int64_t kk = 0; kk < k; kk += 32) {
    for (int l = 0; l < 16; ++l) {
      const int64_t e = kk + 2 * l, o = e + 1;
      const float xe = e < k ? Daz(Bf16(x[e])) : 0.0f;
      const float we = e < k ? Daz(Bf16(w[PackedIndex(row, e, k)])) : 0.0f;
      const float xo = o < k ? Daz(Bf16(x[o])) : 0.0f;
      const float wo = o < k ? Daz(Bf16(w[PackedIndex(row, o, k)])) : 0.0f;
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
__attribute__((target("avx2,fma"))) void KernelAvx2(const float* x, int64_t k, const W* w, int j0, float* y,
                                                    int64_t ldy) {
  __m256 acc[MR][NR];
  #pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  // Whole 32-column chunks: row pointers advance by one chunk (4 x 32).
  const W* rp[NR];
  #pragma GCC unroll 8
  for (int j = 0; j < NR; ++j) rp[j] = At(w, j0 + j, 0, k);
  int64_t kk = 0;
  for (; kk + kPackCols <= k; kk += kPackCols) {
    const int64_t off = kk * kPackRows;
    #pragma GCC unroll 4
    for (int h = 0; h < 4; ++h) {
      __m256 wv[NR];
      #pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) wv[j] = LoadW8(rp[j] + off + 8 * h);
      #pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m256 xv = _mm256_loadu_ps(x + i * k + kk + 8 * h);
        #pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
      }
    }
  }
  for (; kk + 8 <= k; kk += 8) {
    __m256 wv[NR];
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = LoadW8(At(w, j0 + j, kk, k));
    #pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * k + kk);
      #pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (kk < k) {  // zero-padded tail, as the twin
    alignas(32) W wt[NR][8] = {};
    alignas(32) float xt[MR][8] = {};
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) std::memcpy(wt[j], At(w, j0 + j, kk, k), (k - kk) * sizeof(W));
    #pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) std::memcpy(xt[i], x + i * k + kk, (k - kk) * sizeof(float));
    #pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_load_ps(xt[i]);
      #pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, LoadW8(wt[j]), acc[i][j]);
    }
  }
  #pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 8
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
                                                                       int j0, float* y, int64_t ldy) {
  __m512 acc[MR][NR];
  #pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  // Whole 32-column chunks: row pointers advance by one chunk (4 x 32).
  const W* rp[NR];
  #pragma GCC unroll 8
  for (int j = 0; j < NR; ++j) rp[j] = At(w, j0 + j, 0, k);
  int64_t kk = 0;
  for (; kk + kPackCols <= k; kk += kPackCols) {
    const int64_t off = kk * kPackRows;
    #pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m512 wv[NR];
      #pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) wv[j] = LoadW16(rp[j] + off + 16 * h);
      #pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512 xv = _mm512_loadu_ps(x + i * k + kk + 16 * h);
        #pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
      }
    }
  }
  for (; kk + 16 <= k; kk += 16) {
    __m512 wv[NR];
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = LoadW16(At(w, j0 + j, kk, k));
    #pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * k + kk);
      #pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (kk < k) {
    const __mmask16 m = static_cast<__mmask16>((1u << (k - kk)) - 1);
    __m512 wv[NR];
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = LoadW16Masked(At(w, j0 + j, kk, k), m);
    #pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * k + kk);
      #pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  #pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) y[i * ldy + j] = Reduce16(acc[i][j]);
}

// ---- AVX-512 BF16 (16 lanes x 2 products) ---------------------------------

// Cache lines of a later weight tile to prefetch while a block computes,
// spread evenly over its k loop (see BlockedBf16); none by default.
struct TilePrefetch {
  const char* begin = nullptr;
  int64_t lines = 0;
};

template <int MR, int NR>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void KernelBf16(const uint16_t* x, int64_t k,
                                                                                const uint16_t* w, int j0, float* y,
                                                                                int64_t ldy, const TilePrefetch& tp) {
  __m512 acc[MR][NR];
  #pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  // Row pointers advance by one packed chunk (4 x 32 values) per step.
  const uint16_t* rp[NR];
  #pragma GCC unroll 8
  for (int j = 0; j < NR; ++j) rp[j] = At(w, j0 + j, 0, k);
  const int64_t iters = k / 32;
  const int pf_step = iters > 0 ? static_cast<int>((tp.lines + iters - 1) / iters) : 0;
  const char* pf = tp.begin;
  const char* const pf_end = pf + 64 * tp.lines;
  int64_t kk = 0;
  for (; kk + 32 <= k; kk += 32) {
    const int64_t off = kk * kPackRows;
    for (int p = 0; p < pf_step && pf < pf_end; ++p, pf += 64) PrefetchL2(pf);
    __m512bh wv[NR];
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = (__m512bh)_mm512_loadu_si512(rp[j] + off);
    #pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i * k + kk);
      #pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
  if (kk < k) {
    const __mmask32 m = static_cast<__mmask32>((1u << (k - kk)) - 1);
    __m512bh wv[NR];
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = (__m512bh)_mm512_maskz_loadu_epi16(m, At(w, j0 + j, kk, k));
    #pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x + i * k + kk);
      #pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
  #pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) y[i * ldy + j] = Reduce16(acc[i][j]);
}

// ---- Blocking -------------------------------------------------------------

// Block shapes (activation rows x weight rows), chosen on the 1b preset
// (docs/benchmarks.md): one activation row takes one packed block of 4
// weight rows, which is one sequential stream that the hardware prefetcher
// follows on AMD (batch-1 decode at 90-96% of the read bandwidth on one
// thread, against 73-75% for 8 rows, i.e. two streams); on Intel it needs
// the software prefetch of BlockedBf16 to get there; 2-4 rows stream 8
// weight rows in blocks of 2; more rows use 4 x 6 (24 accumulators, the most AVX-512's 32 registers hold with their
// operands); AVX2's 16 registers take 2 x 4. 8 x 2 and 4 x 4 were slower.
// The blocking never changes a result.
struct Shape {
  int mr, nr;
};
inline Shape BlockShape(int64_t rows, bool avx512) {
  if (!avx512) return {2, kNr};
  if (rows == 1) return {1, kNr};
  if (rows <= 4) return {2, 2 * kNr};
  return {4, 6};
}

template <typename F>
void ForBlocks(int64_t rows, int64_t n_begin, int64_t n_end, bool avx512, F&& f) {
  const Shape s = BlockShape(rows, avx512);
  for (int64_t j = n_begin; j < n_end; j += s.nr) {
    const int nr = static_cast<int>(std::min<int64_t>(s.nr, n_end - j));
    for (int64_t i = 0; i < rows; i += s.mr) {
      const int mr = static_cast<int>(std::min<int64_t>(s.mr, rows - i));
      f(i, j, mr, nr);
    }
  }
}

// Dispatches runtime (mr, nr) to a template instance; Wide: the AVX-512
// shapes (mr up to 4, and 1 x 8) are compiled in.
template <bool Wide, template <int, int> class K, typename... Args>
void Dispatch(int mr, int nr, Args&&... args) {
#define STRATA_NR4(M)                      \
  switch (nr) {                            \
    case 1: K<M, 1>::Run(args...); break;  \
    case 2: K<M, 2>::Run(args...); break;  \
    case 3: K<M, 3>::Run(args...); break;  \
    default: K<M, 4>::Run(args...); break; \
  }
  if constexpr (!Wide) {
    if (mr == 1) {
      STRATA_NR4(1);
    } else {
      STRATA_NR4(2);
    }
  } else {
    switch (mr) {
      case 1:
        switch (nr) {
          case 5: K<1, 5>::Run(args...); break;
          case 6: K<1, 6>::Run(args...); break;
          case 7: K<1, 7>::Run(args...); break;
          case 8: K<1, 8>::Run(args...); break;
          default: STRATA_NR4(1);
        }
        break;
      case 2:
        switch (nr) {
          case 5: K<2, 5>::Run(args...); break;
          case 6: K<2, 6>::Run(args...); break;
          case 7: K<2, 7>::Run(args...); break;
          case 8: K<2, 8>::Run(args...); break;
          default: STRATA_NR4(2);
        }
        break;
      case 3:
        switch (nr) {
          case 5: K<3, 5>::Run(args...); break;
          case 6: K<3, 6>::Run(args...); break;
          default: STRATA_NR4(3);
        }
        break;
      default:
        switch (nr) {
          case 5: K<4, 5>::Run(args...); break;
          case 6: K<4, 6>::Run(args...); break;
          default: STRATA_NR4(4);
        }
        break;
    }
  }
#undef STRATA_NR4
}

template <typename W>
struct Avx2Op {
  template <int MR, int NR>
  struct K {
    static void Run(const float* x, int64_t k, const W* w, int j0, float* y, int64_t ldy) {
      KernelAvx2<MR, NR, W>(x, k, w, j0, y, ldy);
    }
  };
};
template <typename W>
struct Avx512Op {
  template <int MR, int NR>
  struct K {
    static void Run(const float* x, int64_t k, const W* w, int j0, float* y, int64_t ldy) {
      KernelAvx512<MR, NR, W>(x, k, w, j0, y, ldy);
    }
  };
};
template <int MR, int NR>
struct Bf16K {
  static void Run(const uint16_t* x, int64_t k, const uint16_t* w, int j0, float* y, int64_t ldy,
                  const TilePrefetch& tp) {
    KernelBf16<MR, NR>(x, k, w, j0, y, ldy, tp);
  }
};

// Start of the packed block holding weight row j (a multiple of 4).
template <typename W>
const W* Block(const W* w, int64_t j, int64_t k) {
  return w + (j / kPackRows) * BlockElems(k);
}

template <typename W>
void RangeSimd(Isa isa, const MatMulArgs& a, const W* w, int64_t n_begin, int64_t n_end) {
  const int64_t k = a.k;
  if (isa == Isa::kAvx2) {
    ForBlocks(a.rows, n_begin, n_end, false, [&](int64_t i, int64_t j, int mr, int nr) {
      Dispatch<false, Avx2Op<W>::template K>(mr, nr, a.x + i * k, k, Block(w, j, k), static_cast<int>(j % kPackRows), a.y + i * a.n + j, a.n);
    });
  } else {
    ForBlocks(a.rows, n_begin, n_end, true, [&](int64_t i, int64_t j, int mr, int nr) {
      Dispatch<true, Avx512Op<W>::template K>(mr, nr, a.x + i * k, k, Block(w, j, k), static_cast<int>(j % kPackRows), a.y + i * a.n + j, a.n);
    });
  }
}

// The AVX-512 BF16 products. With several row blocks per weight tile
// (batches above 4 rows, prompts), each row block prefetches its share of
// the next tile's packed weights, so the stream from memory overlaps all
// the arithmetic on the current tile instead of stalling the first block
// (batch 16 on the 1b preset: about 20% faster, docs/benchmarks.md).
// Where PrefetchSmallProducts() says so, decode-sized products prefetch
// too: one row prefetches its own stream kStreamPrefetchBytes ahead of its
// loads (the hardware prefetcher alone does not run far enough ahead of a
// single stream on Intel), and 2-4 rows prefetch the next tile as larger
// batches do. Splitting k into L1-sized spans (partial sums stored between
// spans, so the same bits) was measured too and was 5-25% slower.
void BlockedBf16(const MatMulArgs& a, int64_t n_begin, int64_t n_end) {
  const int64_t k = a.k;
  const Shape s = BlockShape(a.rows, true);
  const int64_t groups = (a.rows + s.mr - 1) / s.mr;
  const bool small = PrefetchSmallProducts();
  const bool prefetch_next = (groups > 1 && s.mr > 2) || (small && s.mr == 2);
  const bool prefetch_ahead = small && s.mr == 1;
  const char* const base = reinterpret_cast<const char*>(a.w_bf16);
  const int64_t total = PackedSize(a.n, k) * 2, block_bytes = BlockElems(k) * 2;
  // Byte offset of the packed block holding weight row r (a multiple of 4).
  const auto at = [&](int64_t r) { return r / kPackRows * block_bytes; };
  // The lines of bytes [from, to) of the packed weights, both clamped to
  // their end before any pointer is formed.
  const auto lines_of = [&](int64_t from, int64_t to) {
    from = std::min(from, total);
    to = std::min(to, total);
    return TilePrefetch{base + from, from < to ? (to - from + 63) / 64 : 0};
  };
  ForBlocks(a.rows, n_begin, n_end, true, [&](int64_t i, int64_t j, int mr, int nr) {
    TilePrefetch tp;
    if (prefetch_next) {
      // The packed blocks of the next tile's rows [j + nr, j + 2 nr), shared
      // out over this tile's row blocks.
      const TilePrefetch next = lines_of(at(j + s.nr), at(j + 2 * s.nr - 1 + kPackRows));
      const int64_t g = i / s.mr, share = (next.lines + groups - 1) / groups;
      const int64_t first = std::min(next.lines, g * share);
      tp = {next.begin + 64 * first, std::min(next.lines, (g + 1) * share) - first};
    } else if (prefetch_ahead) {
      // This block's own bytes, kStreamPrefetchBytes further on, spread
      // over its k loop: each step prefetches what a step that far ahead
      // will load.
      tp = lines_of(at(j) + kStreamPrefetchBytes, at(j) + block_bytes + kStreamPrefetchBytes);
    }
    Dispatch<true, Bf16K>(mr, nr, a.xb + i * k, k, Block(a.w_bf16, j, k), static_cast<int>(j % kPackRows),
                          a.y + i * a.n + j, a.n, tp);
  });
}

}  // namespace

int64_t PackedSize(int64_t n, int64_t k) {
  return (n + kPackRows - 1) / kPackRows * kPackRows * ((k + kPackCols - 1) / kPackCols) * kPackCols;
}

template <typename T>
void PackWeights(const T* w, int64_t n, int64_t k, T* packed) {
  std::fill(packed, packed + PackedSize(n, k), T{});
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) packed[PackedIndex(r, c, k)] = w[r * k + c];
}
template void PackWeights<uint16_t>(const uint16_t*, int64_t, int64_t, uint16_t*);
template void PackWeights<float>(const float*, int64_t, int64_t, float*);

Isa EffectiveIsa(Isa isa, bool bf16_weights) {
  if ((isa == Isa::kAvx512Bf16 || isa == Isa::kAmx) && !bf16_weights) return Isa::kAvx512;
  return isa;
}

void ToBf16(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = model::FloatToBF16(x[i]);
}

void MatMulRange(Isa isa, const MatMulArgs& a, int64_t n_begin, int64_t n_end) {
  isa = EffectiveIsa(isa, a.w_bf16 != nullptr);
  if (isa == Isa::kPortable) {
    MatMulRangeTwin(isa, a, n_begin, n_end);
  } else if (isa == Isa::kAmx) {
    AmxMatMulRange(a, n_begin, n_end);
  } else if (isa == Isa::kAvx512Bf16) {
    BlockedBf16(a, n_begin, n_end);
  } else if (a.w_bf16) {
    RangeSimd<uint16_t>(isa, a, a.w_bf16, n_begin, n_end);
  } else {
    RangeSimd<float>(isa, a, a.w_f32, n_begin, n_end);
  }
}

void MatMulRangeTwin(Isa isa, const MatMulArgs& a, int64_t n_begin, int64_t n_end) {
  isa = EffectiveIsa(isa, a.w_bf16 != nullptr);
  if (isa == Isa::kAmx) {
    AmxMatMulRangeTwin(a, n_begin, n_end);
    return;
  }
  const int64_t k = a.k;
  for (int64_t j = n_begin; j < n_end; ++j) {
    for (int64_t i = 0; i < a.rows; ++i) {
      float v;
      if (isa == Isa::kAvx512Bf16) {
        v = DotBf16Twin(a.xb + i * k, a.w_bf16, j, k);
      } else if (isa == Isa::kAvx2) {
        v = a.w_bf16 ? DotLanesTwin<8>(a.x + i * k, a.w_bf16, j, k) : DotLanesTwin<8>(a.x + i * k, a.w_f32, j, k);
      } else {
        v = a.w_bf16 ? DotLanesTwin<16>(a.x + i * k, a.w_bf16, j, k)
                     : DotLanesTwin<16>(a.x + i * k, a.w_f32, j, k);
      }
      a.y[i * a.n + j] = v;
    }
  }
}

}  // namespace strata::kernels::cpu
