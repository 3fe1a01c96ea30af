#include "kernels/cpu/amx_matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>

#include "kernels/cpu/amx.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/scratch.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

constexpr int64_t kTileElems = kAmxTileRows * kAmxChunk;  // 512 bf16, 1 KiB

#define STRATA_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

// Where a block's partial sums live between k blocks: C tile (i, j) at
// c + i * 16 * ldc + j * 16 (ldc in floats); `load` says whether to start
// from them (false: from zero).
struct CBlock {
  float* c;
  int64_t ldc;
  bool load;
};

#define STRATA_C_TILES(OP, b, MT, NT)                                  \
  do {                                                                 \
    const int64_t ld_ = (b).ldc * 4, r_ = 16 * (b).ldc;                \
    OP(0, (b).c, ld_);                                                 \
    if constexpr (MT == 1) {                                           \
      if constexpr (NT > 1) OP(1, (b).c + 16, ld_);                    \
      if constexpr (NT > 2) OP(2, (b).c + 32, ld_);                    \
      if constexpr (NT > 3) OP(3, (b).c + 48, ld_);                    \
    } else if constexpr (NT == 1) {                                    \
      OP(1, (b).c + r_, ld_);                                          \
    } else {                                                           \
      OP(1, (b).c + 16, ld_);                                          \
      OP(2, (b).c + r_, ld_);                                          \
      OP(3, (b).c + r_ + 16, ld_);                                     \
    }                                                                  \
  } while (0)

// One block of MT x 16 activation rows by NT x 16 outputs of a group, over
// `n` k chunks. a: the block's first row tile at its first chunk (the next
// row tile is `a_next` elements on); w: the block's first output tile at
// that chunk (chunks are kAmxGroupTiles tiles apart). Tiles: C (i, j) in tmm(i * NT +
// j); for MT = 1 the A operand is tmm4 and the weight tiles rotate over
// tmm5-7; for MT = 2, A in tmm4-5 and the weights in tmm6-7.
// Cache lines of later weights to bring into L2 while a block computes:
// `per_chunk` lines at each k chunk, from `next` up to `end`. Volatile asm,
// as in matmul.cc: GCC 12 deletes _mm_prefetch.
struct Prefetch {
  const char* next = nullptr;
  const char* end = nullptr;
  int64_t per_chunk = 0;
};
inline void PrefetchLines(Prefetch& p) {
  for (int64_t i = 0; i < p.per_chunk && p.next < p.end; ++i, p.next += 64) {
    asm volatile("prefetcht1 %0" : : "m"(*p.next));
  }
}
// `bytes` of a's packed weights from byte offset `from` (clamped to the
// matrix, so no pointer is formed past its end), spread over `calls` calls
// of PrefetchLines.
Prefetch PrefetchOf(const MatMulArgs& a, int64_t from, int64_t bytes, int64_t calls) {
  const int64_t size = AmxPackedSize(a.n, a.k) * 2;
  from = std::min(from, size);
  const char* base = reinterpret_cast<const char*>(a.w_bf16);
  Prefetch p;
  p.next = base + from;
  p.end = base + std::min(size, from + bytes);
  p.per_chunk = (bytes / 64 + calls - 1) / calls;
  return p;
}

// The four products of a 2 x 2 block at one chunk, each operand of the
// next chunk loaded right after its last use (a0, a1: the activation
// tiles, w: the first of the two weight tiles), so the loads overlap the
// products; kT1: the activations with the T1 hint (k spans).
template <bool kT1>
STRATA_AMX __attribute__((always_inline)) inline void ProductsThenLoad(const uint16_t* a0, const uint16_t* a1,
                                                                       const uint16_t* w) {
  STRATA_TILE_DPBF16(0, 4, 6);
  STRATA_TILE_DPBF16(1, 4, 7);
  if constexpr (kT1) {
    STRATA_TILE_LOAD_T1(4, a0, 64);
  } else {
    STRATA_TILE_LOAD(4, a0, 64);
  }
  STRATA_TILE_DPBF16(2, 5, 6);
  STRATA_TILE_LOAD(6, w, 64);
  STRATA_TILE_DPBF16(3, 5, 7);
  if constexpr (kT1) {
    STRATA_TILE_LOAD_T1(5, a1, 64);
  } else {
    STRATA_TILE_LOAD(5, a1, 64);
  }
  STRATA_TILE_LOAD(7, w + kTileElems, 64);
}

template <int MT, int NT>
STRATA_AMX void TileBlock(const uint16_t* a, int64_t a_next, const uint16_t* w, int64_t n, const CBlock& cb,
                          Prefetch& pf) {
  static_assert(MT * NT <= 4 && (MT == 1 || NT <= 2));
  if (cb.load) {
    STRATA_C_TILES(STRATA_TILE_LOAD, cb, MT, NT);
  } else {
    STRATA_TILE_ZERO(0);
    if constexpr (MT * NT > 1) STRATA_TILE_ZERO(1);
    if constexpr (MT * NT > 2) STRATA_TILE_ZERO(2);
    if constexpr (MT * NT > 3) STRATA_TILE_ZERO(3);
  }
  constexpr int64_t kChunkW = kAmxGroupTiles * kTileElems;
  if constexpr (MT == 2 && NT == 2) {
    // Software-pipelined: each operand of the next chunk is loaded right
    // after its last use in this one, so loads overlap the products.
    const uint16_t* a1 = a + a_next;
    STRATA_TILE_LOAD(4, a, 64);
    STRATA_TILE_LOAD(6, w, 64);
    STRATA_TILE_LOAD(5, a1, 64);
    STRATA_TILE_LOAD(7, w + kTileElems, 64);
    for (int64_t ch = 1; ch < n; ++ch) {
      PrefetchLines(pf);
      ProductsThenLoad<false>(a + ch * kTileElems, a1 + ch * kTileElems, w + ch * kChunkW);
    }
    STRATA_TILE_DPBF16(0, 4, 6);
    STRATA_TILE_DPBF16(1, 4, 7);
    STRATA_TILE_DPBF16(2, 5, 6);
    STRATA_TILE_DPBF16(3, 5, 7);
  } else {
    for (int64_t ch = 0; ch < n; ++ch) {
      PrefetchLines(pf);
      const uint16_t* wt = w + ch * kChunkW;
      const uint16_t* at = a + ch * kTileElems;
      STRATA_TILE_LOAD(4, at, 64);
      if constexpr (MT == 2) {  // NT == 1
        STRATA_TILE_LOAD(5, at + a_next, 64);
        STRATA_TILE_LOAD(6, wt, 64);
        STRATA_TILE_DPBF16(0, 4, 6);
        STRATA_TILE_DPBF16(1, 5, 6);
        continue;
      }
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
    }
  }
  STRATA_C_TILES(STRATA_TILE_STORE, cb, MT, NT);
}

// k spans (prompt-sized products): `np` pairs of row tiles by one pair of
// output tiles over the same `n` chunks, so the span's 2 x n weight tiles
// stay in L1 for every pair while the activations stream from L2 (loaded
// with the T1 hint, so they do not evict them). Pair p's first row tile is
// at a + p * a_pair, its sums at c + p * c_pair (row stride ldc floats),
// loaded first when `load`, else zero. The switch from one pair to the
// next overlaps the last chunk's products: the next pair's operands load
// as this pair's last products free their tiles, and each sum tile is
// stored and the next pair's loaded right behind its last product. `pf`
// brings later weights into L2, some lines at each chunk.
STRATA_AMX void SpanPairs(const uint16_t* a, int64_t a_next, int64_t a_pair, int64_t np, const uint16_t* w,
                          int64_t n, float* c, int64_t ldc, int64_t c_pair, bool load, Prefetch& pf) {
  constexpr int64_t kChunkW = kAmxGroupTiles * kTileElems;
  const int64_t ld = ldc * 4, r = 16 * ldc;
  if (load) {
    STRATA_C_TILES(STRATA_TILE_LOAD, (CBlock{c, ldc, load}), 2, 2);
  } else {
    STRATA_TILE_ZERO(0);
    STRATA_TILE_ZERO(1);
    STRATA_TILE_ZERO(2);
    STRATA_TILE_ZERO(3);
  }
  STRATA_TILE_LOAD_T1(4, a, 64);
  STRATA_TILE_LOAD(6, w, 64);
  STRATA_TILE_LOAD_T1(5, a + a_next, 64);
  STRATA_TILE_LOAD(7, w + kTileElems, 64);
  for (int64_t p = 0; p < np; ++p) {
    const uint16_t* ap = a + p * a_pair;
    const uint16_t* ap1 = ap + a_next;
    float* cp = c + p * c_pair;
    for (int64_t ch = 1; ch < n; ++ch) {
      PrefetchLines(pf);
      ProductsThenLoad<true>(ap + ch * kTileElems, ap1 + ch * kTileElems, w + ch * kChunkW);
    }
    PrefetchLines(pf);
    if (p + 1 == np) {
      STRATA_TILE_DPBF16(0, 4, 6);
      STRATA_TILE_DPBF16(1, 4, 7);
      STRATA_TILE_DPBF16(2, 5, 6);
      STRATA_TILE_DPBF16(3, 5, 7);
      STRATA_C_TILES(STRATA_TILE_STORE, (CBlock{cp, ldc, load}), 2, 2);
      break;
    }
    const uint16_t* an = ap + a_pair;
    float* cn = cp + c_pair;
    ProductsThenLoad<true>(an, an + a_next, w);  // the next pair's first chunk
    if (load) {
      STRATA_TILE_STORE(0, cp, ld);
      STRATA_TILE_LOAD(0, cn, ld);
      STRATA_TILE_STORE(1, cp + 16, ld);
      STRATA_TILE_LOAD(1, cn + 16, ld);
      STRATA_TILE_STORE(2, cp + r, ld);
      STRATA_TILE_LOAD(2, cn + r, ld);
      STRATA_TILE_STORE(3, cp + r + 16, ld);
      STRATA_TILE_LOAD(3, cn + r + 16, ld);
    } else {
      STRATA_TILE_STORE(0, cp, ld);
      STRATA_TILE_ZERO(0);
      STRATA_TILE_STORE(1, cp + 16, ld);
      STRATA_TILE_ZERO(1);
      STRATA_TILE_STORE(2, cp + r, ld);
      STRATA_TILE_ZERO(2);
      STRATA_TILE_STORE(3, cp + r + 16, ld);
      STRATA_TILE_ZERO(3);
    }
  }
}

void RunBlock(int mt, int nt, const uint16_t* a, int64_t a_next, const uint16_t* w, int64_t n, const CBlock& cb,
              Prefetch& pf) {
  if (mt == 2) {
    if (nt == 2) {
      TileBlock<2, 2>(a, a_next, w, n, cb, pf);
    } else {
      TileBlock<2, 1>(a, a_next, w, n, cb, pf);
    }
    return;
  }
  switch (nt) {
    case 1: TileBlock<1, 1>(a, a_next, w, n, cb, pf); break;
    case 2: TileBlock<1, 2>(a, a_next, w, n, cb, pf); break;
    case 3: TileBlock<1, 3>(a, a_next, w, n, cb, pf); break;
    default: TileBlock<1, 4>(a, a_next, w, n, cb, pf); break;
  }
}

// Blocking of one call (docs/benchmarks.md has the measurements): row
// tiles go in "super blocks" whose activations for one k block (at most
// kKBlock chunks) stay in L2 while the weights of up to `groups` output
// groups stream past; partial sums of a super block wait in a per-thread
// scratch between k blocks. Super blocks of at least kSpanMinPairs row
// pairs walk each k block in spans (SpannedTilePair); y is written by
// streaming stores above one row tile.
constexpr int64_t kSlabBytes = 1 << 20;     // activations of a super block, one k block
constexpr int64_t kScratchBytes = 1 << 19;  // partial sums of a super block
constexpr int64_t kKBlock = 64;             // chunks: 2048 of k
constexpr int64_t kStreamAhead = 32 << 10;  // decode prefetch distance, bytes
constexpr int64_t kSpan = 16;               // chunks of a k span: 2 x 16 weight tiles, 32 KiB, in L1
constexpr int64_t kSpanMinPairs = 8;        // row-tile pairs of a super block that make spans pay
constexpr int64_t kDeepSlabBytes = 512 << 10;  // the same for deep k in spans (MakePlan)
int64_t KBlockChunks(int64_t chunks, int64_t most) {
  const int64_t blocks = (chunks + most - 1) / most;
  return (chunks + blocks - 1) / blocks;  // even k blocks
}

struct Plan {
  int64_t chunks, kb, row_tiles, super, groups;
  bool stream;  // y by streaming stores
};
Plan MakePlan(const MatMulArgs& a) {
  Plan p;
  p.chunks = AmxActCols(a.k) / kAmxChunk;
  p.row_tiles = AmxActRows(a.rows) / kAmxTileRows;
  // Activations that fit the slab whole (decode batches) need no k blocks,
  // which would cut each group's stream into pieces.
  const bool whole = p.row_tiles * p.chunks * kTileElems * 2 <= kSlabBytes;
  p.kb = whole ? p.chunks : KBlockChunks(p.chunks, kKBlock);
  int64_t slab = kSlabBytes;
  if (!whole && p.row_tiles >= 2 * kSpanMinPairs) {
    // Deep k with many rows (a prompt's down_proj): k blocks of one span
    // each and super blocks of up to 32 row tiles, so every span's weights
    // serve 16 row pairs from L1: 1024 x 2048 x 8192 from DRAM 0.92-0.98
    // to 1.25-1.29 TFLOP/s (k blocks of 64 chunks with 16-tile super
    // blocks, or of 16 with 64-tile ones, were slower).
    p.kb = KBlockChunks(p.chunks, kSpan);
    slab = kDeepSlabBytes;
  }
  p.super = std::max<int64_t>(2, slab / (p.kb * 2 * kTileElems) / 2 * 2);
  p.super = std::min(p.super, p.row_tiles);
  p.groups = std::max<int64_t>(1, kScratchBytes / (p.super * kAmxTileRows * kAmxGroup * 4));
  // Decode steps of up to one row tile write y with plain stores: it is
  // small and read again at once (streaming cost batch 1 2-3%); above
  // that, streaming stores spare the read for ownership of every line
  // (prompts of 128 and 1024 tokens 12-17% faster, batch 64 12%).
  p.stream = p.row_tiles > 1;
  return p;
}

// Copies rows [row0, row0 + mrows) below `rows` and columns [lo, hi) of y
// out of c, whose column 0 is output col0 and row stride ldc. `stream`:
// with streaming (non-temporal) stores where the rows are whole aligned
// cache lines, so writing y costs no read for ownership (prompt-sized
// products: docs/benchmarks.md).
STRATA_AMX void StoreBlock(const float* c, int64_t ldc, int64_t row0, int64_t mrows, int64_t rows, int64_t col0,
                           int64_t lo, int64_t hi, float* y, int64_t ldy, bool stream) {
  const int64_t valid = std::min(mrows, rows - row0);
  if (stream && (hi - lo) % 16 == 0 && ldy % 16 == 0 && reinterpret_cast<uintptr_t>(y + lo) % 64 == 0) {
    for (int64_t i = 0; i < valid; ++i) {
      float* dst = y + (row0 + i) * ldy + lo;
      const float* src = c + i * ldc + (lo - col0);
      for (int64_t j = 0; j < hi - lo; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
    }
    return;
  }
  for (int64_t i = 0; i < valid; ++i) {
    std::memcpy(y + (row0 + i) * ldy + lo, c + i * ldc + (lo - col0), (hi - lo) * sizeof(float));
  }
}

// Output tiles [t0, t1) of group g that a range [lo, hi) touches.
struct GroupSpan {
  int64_t lo, hi;
  int t0, t1;
};
GroupSpan SpanOf(int64_t g, int64_t n_begin, int64_t n_end) {
  const int64_t base = g * kAmxGroup;
  GroupSpan s;
  s.lo = std::max(n_begin, base);
  s.hi = std::min(n_end, base + kAmxGroup);
  s.t0 = static_cast<int>((s.lo - base) / kAmxTileRows);
  s.t1 = static_cast<int>((s.hi - base + kAmxTileRows - 1) / kAmxTileRows);
  return s;
}

// One pair of output tiles (columns col0.., the range [lo, hi) of them
// wanted) for row tiles [rs, re) over k block [k0, k0 + kn), in k spans of
// kSpan chunks (SpanPairs; an odd last row tile by RunBlock). The sums
// live between spans in a per-thread buffer when the k block is the whole
// of k, else in the super block's scratch at `sc` (row stride ld).
void SpannedTilePair(const MatMulArgs& a, const Plan& p, int64_t rs, int64_t re, int64_t k0, int64_t kn,
                     const uint16_t* w, int64_t col0, int64_t lo, int64_t hi, float* sc, int64_t ld) {
  constexpr int64_t kChunkW = kAmxGroupTiles * kTileElems;
  const int64_t pairs = (re - rs) / 2;
  const bool odd = (re - rs) % 2 != 0;
  const bool last = k0 + kn == p.chunks;
  const bool whole = k0 == 0 && last;
  float* c = sc;
  int64_t ldc = ld;
  if (whole) {
    c = ThreadScratchOf<float>(kScratchMatMulSpans, (pairs + 1) * 4 * kAmxTileRows * kAmxTileRows);
    ldc = 2 * kAmxTileRows;
  }
  const int64_t c_pair = 2 * kAmxTileRows * ldc;
  const int64_t a_next = p.chunks * kTileElems;
  const int64_t w_at = (w - a.w_bf16) * 2;  // bytes into the packed weights
  for (int64_t sp = 0; sp < kn; sp += kSpan) {
    const int64_t sn = std::min(kSpan, kn - sp);
    const bool load = k0 + sp > 0;
    const uint16_t* ws = w + sp * kChunkW;
    // The next span's weights (this group's, or after the last span the
    // next group's first) come into L2 while this span computes, spread
    // over its chunks: 1.34 against 1.16 TFLOP/s for 1024 x 8192 x 2048
    // from DRAM; the next group instead, as the 2 x 2 path does, was slower.
    Prefetch pf = PrefetchOf(a, w_at + (sp + sn < kn ? sp + sn : p.chunks) * kChunkW * 2, kSpan * kChunkW * 2,
                             (pairs + odd) * sn);
    SpanPairs(a.xb + (rs * p.chunks + k0 + sp) * kTileElems, a_next, 2 * a_next, pairs, ws, sn, c, ldc, c_pair, load,
              pf);
    if (odd) {
      RunBlock(1, 2, a.xb + ((re - 1) * p.chunks + k0 + sp) * kTileElems, a_next, ws, sn,
               CBlock{c + pairs * c_pair, ldc, load}, pf);
    }
  }
  if (!last) return;
  for (int64_t q = 0; q < pairs + (odd ? 1 : 0); ++q) {
    const int64_t rt = rs + 2 * q;
    StoreBlock(c + q * c_pair, ldc, rt * kAmxTileRows, std::min<int64_t>(2, re - rt) * kAmxTileRows, a.rows, col0, lo,
               hi, a.y, a.n, p.stream);
  }
}

// Row tiles [rs, re) by groups [g0, g1) over k block [k0, k0 + kn): each
// block's sums start from the scratch unless k0 == 0 and end in it, or in
// y after the last k block.
void SuperBlock(const MatMulArgs& a, const Plan& p, int64_t rs, int64_t re, int64_t g0, int64_t g1, int64_t k0,
                int64_t kn, int64_t n_begin, int64_t n_end, float* scratch) {
  const int64_t ld = (g1 - g0) * kAmxGroup;
  const bool last = k0 + kn == p.chunks;
  alignas(64) float c[2 * kAmxTileRows * 64];
  for (int64_t g = g0; g < g1; ++g) {
    const GroupSpan s = SpanOf(g, n_begin, n_end);
    const uint16_t* wg = a.w_bf16 + (g * p.chunks + k0) * kAmxGroupTiles * kTileElems;
    // The next group's weights for this k block come into L2 while this
    // group computes, spread over its blocks, so its first row tiles do
    // not wait on DRAM.
    Prefetch pf;
    {
      const int64_t bytes = kn * kAmxGroupTiles * kTileElems * 2;
      const int64_t blocks = ((s.t1 - s.t0 + 1) / 2) * ((re - rs + 1) / 2);
      // One row tile (decode): the matrix is one sequential stream, read
      // at memory speed; prefetching a fixed 32 KiB ahead of it beat the
      // next group (128-512 KiB ahead) and 16-256 KiB (docs/benchmarks.md).
      const int64_t at = (wg - a.w_bf16) * 2;
      pf = PrefetchOf(a,
                      p.row_tiles == 1 && p.kb == p.chunks ? at + kStreamAhead
                                                          : at + p.chunks * kAmxGroupTiles * kTileElems * 2,
                      bytes, blocks * kn);
    }
    // One row tile: the group's tiles in one pass. More: pairs of row
    // tiles by pairs of output tiles (2 x 2, each operand used twice).
    const int step = p.row_tiles == 1 ? s.t1 - s.t0 : 2;
    for (int t = s.t0; t < s.t1; t += step) {
      const int nt = std::min(step, s.t1 - t);
      const int64_t col0 = g * kAmxGroup + t * kAmxTileRows;
      if (nt == 2 && (re - rs) / 2 >= kSpanMinPairs) {
        SpannedTilePair(a, p, rs, re, k0, kn, wg + t * kTileElems, col0, std::max(s.lo, col0),
                        std::min(s.hi, col0 + 2 * kAmxTileRows),
                        scratch != nullptr ? scratch + (col0 - g0 * kAmxGroup) : nullptr, ld);
        continue;
      }
      for (int64_t rt = rs; rt < re; rt += 2) {
        const int mt = static_cast<int>(std::min<int64_t>(2, re - rt));
        // A single k block needs no scratch: the small buffer c will do.
        const CBlock cb = k0 == 0 && last
                              ? CBlock{c, 64, false}
                              : CBlock{scratch + (rt - rs) * kAmxTileRows * ld + (col0 - g0 * kAmxGroup), ld, k0 > 0};
        RunBlock(mt, nt, a.xb + (rt * p.chunks + k0) * kTileElems, p.chunks * kTileElems, wg + t * kTileElems, kn,
                 cb, pf);
        if (last) {
          StoreBlock(cb.c, cb.ldc, rt * kAmxTileRows, mt * kAmxTileRows, a.rows, col0, std::max(s.lo, col0),
                     std::min(s.hi, col0 + nt * kAmxTileRows), a.y, a.n, p.stream);
        }
      }
    }
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

STRATA_AMX void ToBf16TileRows(const float* x, int64_t rows, int64_t k, int64_t tile_begin, int64_t tile_end,
                               uint16_t* out) {
  const int64_t cols = AmxActCols(k);
  std::fill(out + tile_begin * kAmxTileRows * cols, out + tile_end * kAmxTileRows * cols, uint16_t{0});
  for (int64_t r = tile_begin * kAmxTileRows; r < std::min(rows, tile_end * kAmxTileRows); ++r) {
    const float* xr = x + r * k;
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {  // 16 values never straddle a 32-column chunk
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + AmxActIndex(r, i, k)),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(xr + i)));
    }
    for (; i < k; ++i) out[AmxActIndex(r, i, k)] = model::FloatToBF16(xr[i]);
  }
}

void ToBf16Tiles(const float* x, int64_t rows, int64_t k, uint16_t* out) {
  ToBf16TileRows(x, rows, k, 0, AmxActRows(rows) / kAmxTileRows, out);
}

void AmxMatMulRange(const MatMulArgs& a, int64_t n_begin, int64_t n_end) {
  n_end = std::min(n_end, a.n);
  if (n_begin >= n_end || a.rows == 0) return;
  ConfigureTiles();
  const Plan p = MakePlan(a);
  const int64_t g_begin = n_begin / kAmxGroup, g_end = (n_end + kAmxGroup - 1) / kAmxGroup;
  float* scratch = p.kb < p.chunks
                       ? ThreadScratchOf<float>(kScratchMatMulSums, p.super * kAmxTileRows * p.groups * kAmxGroup)
                       : nullptr;
  for (int64_t rs = 0; rs < p.row_tiles; rs += p.super) {
    const int64_t re = std::min(p.row_tiles, rs + p.super);
    for (int64_t g0 = g_begin; g0 < g_end; g0 += p.groups) {
      const int64_t g1 = std::min(g_end, g0 + p.groups);
      for (int64_t k0 = 0; k0 < p.chunks; k0 += p.kb) {
        SuperBlock(a, p, rs, re, g0, g1, k0, std::min(p.kb, p.chunks - k0), n_begin, n_end, scratch);
      }
    }
  }
  if (p.stream) _mm_sfence();  // the streaming stores are seen before the caller's next step
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
