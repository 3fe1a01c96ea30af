#include "kernels/cpu/amx_matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/amx.h"
#include "kernels/cpu/matmul.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

constexpr int64_t kTileElems = kAmxTileRows * kAmxChunk;  // 512 bf16, 1 KiB

#define STRATA_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

// One block of MT x 16 activation rows by NT x 16 outputs of a group, over
// every k chunk, into c: [MT * 16][64] f32 (tile j of row tile i at
// column 16 * j). a: chunk 0 of the block's first row tile (the next row
// tile starts `chunks` tiles later); w: chunk 0 of the block's first
// output tile.
// Tiles: C (i, j) in tmm(i * NT + j) (at most 4); for MT = 1 the A operand
// is tmm4 and the weight tiles rotate over tmm5-7; for MT = 2, A in tmm4-5
// and the weights in tmm6-7.
template <int MT, int NT>
STRATA_AMX void TileBlock(const uint16_t* a, const uint16_t* w, int64_t chunks, float* c) {
  static_assert(MT * NT <= 4 && (MT == 1 || NT <= 2));
  STRATA_TILE_ZERO(0);
  if constexpr (MT * NT > 1) STRATA_TILE_ZERO(1);
  if constexpr (MT * NT > 2) STRATA_TILE_ZERO(2);
  if constexpr (MT * NT > 3) STRATA_TILE_ZERO(3);
  const int64_t a_second = chunks * kTileElems;
  for (int64_t ch = 0; ch < chunks && !(MT == 2 && NT == 2); ++ch) {
    const uint16_t* wt = w + ch * 4 * kTileElems;
    const uint16_t* at = a + ch * kTileElems;
    if constexpr (MT == 1) {
      STRATA_TILE_LOAD(4, at, 64);
      STRATA_TILE_LOAD(5, wt, 64);
      STRATA_TILE_DPBF16(0, 4, 5);
      if constexpr (NT > 1) {
        STRATA_TILE_LOAD(6, wt + kTileElems, 64);
        STRATA_TILE_DPBF16(1, 4, 6);
      }
      if constexpr (NT > 2) {
        STRATA_TILE_LOAD(7, wt + 2 * kTileElems, 64);
        STRATA_TILE_DPBF16(2, 4, 7);
      }
      if constexpr (NT > 3) {
        STRATA_TILE_LOAD(5, wt + 3 * kTileElems, 64);
        STRATA_TILE_DPBF16(3, 4, 5);
      }
    } else if constexpr (NT == 1) {
      STRATA_TILE_LOAD(4, at, 64);
      STRATA_TILE_LOAD(5, at + a_second, 64);
      STRATA_TILE_LOAD(6, wt, 64);
      STRATA_TILE_DPBF16(0, 4, 6);
      STRATA_TILE_DPBF16(1, 5, 6);
    }
  }
  if constexpr (MT == 2 && NT == 2) {
    // Software-pipelined: each operand of the next chunk is loaded right
    // after its last use in this one, so loads overlap the products
    // (tiles have no renaming to do it for us).
    const uint16_t* a1 = a + a_second;
    STRATA_TILE_LOAD(4, a, 64);
    STRATA_TILE_LOAD(6, w, 64);
    STRATA_TILE_LOAD(5, a1, 64);
    STRATA_TILE_LOAD(7, w + kTileElems, 64);
    for (int64_t ch = 1; ch < chunks; ++ch) {
      const uint16_t* wt = w + ch * 4 * kTileElems;
      STRATA_TILE_DPBF16(0, 4, 6);
      STRATA_TILE_DPBF16(1, 4, 7);
      STRATA_TILE_LOAD(4, a + ch * kTileElems, 64);
      STRATA_TILE_DPBF16(2, 5, 6);
      STRATA_TILE_LOAD(6, wt, 64);
      STRATA_TILE_DPBF16(3, 5, 7);
      STRATA_TILE_LOAD(5, a1 + ch * kTileElems, 64);
      STRATA_TILE_LOAD(7, wt + kTileElems, 64);
    }
    STRATA_TILE_DPBF16(0, 4, 6);
    STRATA_TILE_DPBF16(1, 4, 7);
    STRATA_TILE_DPBF16(2, 5, 6);
    STRATA_TILE_DPBF16(3, 5, 7);
  }
  constexpr int64_t ldc = 64 * sizeof(float);
  STRATA_TILE_STORE(0, c, ldc);
  if constexpr (MT == 1) {
    if constexpr (NT > 1) STRATA_TILE_STORE(1, c + 16, ldc);
    if constexpr (NT > 2) STRATA_TILE_STORE(2, c + 32, ldc);
    if constexpr (NT > 3) STRATA_TILE_STORE(3, c + 48, ldc);
  } else {
    if constexpr (NT == 1) {
      STRATA_TILE_STORE(1, c + 16 * 64, ldc);
    } else {
      STRATA_TILE_STORE(2, c + 16 * 64, ldc);
      STRATA_TILE_STORE(1, c + 16, ldc);
      STRATA_TILE_STORE(3, c + 16 * 64 + 16, ldc);
    }
  }
}

void RunBlock(int mt, int nt, const uint16_t* a, const uint16_t* w, int64_t chunks, float* c) {
  if (mt == 2) {
    if (nt == 2) {
      TileBlock<2, 2>(a, w, chunks, c);
    } else {
      TileBlock<2, 1>(a, w, chunks, c);
    }
    return;
  }
  switch (nt) {
    case 1: TileBlock<1, 1>(a, w, chunks, c); break;
    case 2: TileBlock<1, 2>(a, w, chunks, c); break;
    case 3: TileBlock<1, 3>(a, w, chunks, c); break;
    default: TileBlock<1, 4>(a, w, chunks, c); break;
  }
}

// Copies the block's outputs in [lo, hi) (columns of y) and rows below
// `rows` out of c: [.][64], whose column 0 is output col0.
void StoreBlock(const float* c, int64_t row0, int64_t mrows, int64_t rows, int64_t col0, int64_t lo, int64_t hi,
                float* y, int64_t ldy) {
  const int64_t valid = std::min(mrows, rows - row0);
  for (int64_t i = 0; i < valid; ++i) {
    std::memcpy(y + (row0 + i) * ldy + lo, c + i * 64 + (lo - col0), (hi - lo) * sizeof(float));
  }
}

inline float Bf16(uint16_t h) { return model::BF16ToFloat(h); }
inline float Ftz(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v; }

}  // namespace

int64_t AmxPackedSize(int64_t n, int64_t k) {
  return (n + kAmxGroup - 1) / kAmxGroup * kAmxGroup * AmxActCols(k);
}

void PackWeightsAmx(const uint16_t* w, int64_t n, int64_t k, uint16_t* packed) {
  std::fill(packed, packed + AmxPackedSize(n, k), uint16_t{0});
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) packed[AmxPackedIndex(r, c, k)] = w[r * k + c];
}

STRATA_AMX void ToBf16Tiles(const float* x, int64_t rows, int64_t k, uint16_t* out) {
  const int64_t padded = AmxActRows(rows) * AmxActCols(k);
  std::fill(out, out + padded, uint16_t{0});
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * k;
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {  // 16 values never straddle a 32-column chunk
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + AmxActIndex(r, i, k)),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(xr + i)));
    }
    for (; i < k; ++i) out[AmxActIndex(r, i, k)] = model::FloatToBF16(xr[i]);
  }
}

void AmxMatMulRange(const MatMulArgs& a, int64_t n_begin, int64_t n_end) {
  n_end = std::min(n_end, a.n);
  if (n_begin >= n_end || a.rows == 0) return;
  ConfigureTiles();
  const int64_t chunks = AmxActCols(a.k) / kAmxChunk;
  const int64_t row_tiles = AmxActRows(a.rows) / kAmxTileRows;
  alignas(64) float c[2 * kAmxTileRows * 64];
  for (int64_t g = n_begin / kAmxGroup; g * kAmxGroup < n_end; ++g) {
    const int64_t base = g * kAmxGroup;
    const int64_t lo = std::max(n_begin, base), hi = std::min(n_end, base + kAmxGroup);
    const int t0 = static_cast<int>((lo - base) / kAmxTileRows);
    const int t1 = static_cast<int>((hi - base + kAmxTileRows - 1) / kAmxTileRows);
    const uint16_t* wg = a.w_bf16 + g * chunks * 4 * kTileElems;
    // One row tile: the group's tiles in one pass. More: pairs of row
    // tiles by pairs of output tiles (2 x 2, each operand used twice).
    const int step = row_tiles == 1 ? t1 - t0 : 2;
    for (int t = t0; t < t1; t += step) {
      const int nt = std::min(step, t1 - t);
      const int64_t col0 = base + t * kAmxTileRows;
      const int64_t blo = std::max(lo, col0), bhi = std::min(hi, col0 + nt * kAmxTileRows);
      for (int64_t rt = 0; rt < row_tiles; rt += 2) {
        const int mt = static_cast<int>(std::min<int64_t>(2, row_tiles - rt));
        RunBlock(mt, nt, a.xb + rt * chunks * kTileElems, wg + t * kTileElems, chunks, c);
        StoreBlock(c, rt * kAmxTileRows, mt * kAmxTileRows, a.rows, col0, blo, bhi, a.y, a.n);
      }
    }
  }
  ReleaseTiles();
}

void AmxMatMulRangeTwin(const MatMulArgs& a, int64_t n_begin, int64_t n_end) {
  const int64_t cols = AmxActCols(a.k);
  n_end = std::min(n_end, a.n);
  for (int64_t j = n_begin; j < n_end; ++j) {
    for (int64_t i = 0; i < a.rows; ++i) {
      float acc = 0.0f;
      for (int64_t c0 = 0; c0 < cols; c0 += kAmxChunk) {
        float sum[2] = {0.0f, 0.0f};  // even and odd products
        for (int64_t kk = c0; kk < c0 + kAmxChunk; ++kk) {
          const float xv = Ftz(Bf16(a.xb[AmxActIndex(i, kk, a.k)])), wv = Ftz(Bf16(a.w_bf16[AmxPackedIndex(j, kk, a.k)]));
          // The bf16 product is exact in double; one rounding to f32.
          sum[kk % 2] = Ftz(static_cast<float>(static_cast<double>(sum[kk % 2]) + static_cast<double>(xv) * wv));
        }
        acc = Ftz(acc + Ftz(sum[0] + sum[1]));
      }
      a.y[i * a.n + j] = acc;
    }
  }
}

}  // namespace strata::kernels::cpu
