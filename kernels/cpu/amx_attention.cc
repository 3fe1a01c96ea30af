#include "kernels/cpu/amx_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/amx.h"
#include "kernels/cpu/scratch.h"
#include "kernels/cpu/vec_exp.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

constexpr int64_t kTile = 512;  // bf16 elements of a 16 x 32 tile

#define STRATA_AMX __attribute__((target("amx-tile,amx-bf16")))

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The shapes of one call.
struct Dims {
  int64_t group;   // query heads per KV head
  int64_t tokens;  // tokens per block of 16 virtual rows
  int64_t d, d_chunks, keys, keys_pad;
  int64_t width;   // kv_heads * d: a slot's stride in the cache
  int64_t p_ld;    // row stride of P (elements), off 4 KiB multiples
};
Dims DimsOf(const AmxAttentionArgs& a, int64_t n, int64_t cached) {
  Dims m;
  m.group = a.q_heads / a.kv_heads;
  m.tokens = 16 / m.group;
  m.d = a.d;
  m.d_chunks = a.d / 32;
  m.keys = cached + n;
  m.keys_pad = RoundUp(m.keys, 64);
  m.width = a.kv_heads * a.d;
  m.p_ld = m.keys_pad + 32;
  return m;
}

// K of head h, keys [0, keys) gathered as rows of d (zeros to keys_pad);
// V as key pairs: tile (key chunk kc, column tile dt) at (kc * d / 16 + dt)
// * 512, element (kp, col, p) at kp * 32 + col * 2 + p = V[kc * 32 + 2 kp + p]:
// one vpermt2w interleaves 16 columns of two keys into a tile row.
__attribute__((target("avx512f,avx512bw"))) void GatherKv(const AmxAttentionArgs& a, const Dims& m, int64_t h,
                                                          const int64_t* slots, uint16_t* kb, uint16_t* vp) {
  std::memset(kb + m.keys * m.d, 0, (m.keys_pad - m.keys) * m.d * 2);
  const int64_t col_tiles = m.d / 16;
  const __m512i interleave = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7,
                                              38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  for (int64_t j = 0; j < m.keys_pad; j += 2) {
    const uint16_t* v0 = j < m.keys ? a.v + slots[j] * m.width + h * m.d : nullptr;
    const uint16_t* v1 = j + 1 < m.keys ? a.v + slots[j + 1] * m.width + h * m.d : nullptr;
    for (int64_t i = j; i < j + 2 && i < m.keys; ++i) std::memcpy(kb + i * m.d, a.k + slots[i] * m.width + h * m.d, m.d * 2);
    uint16_t* row = vp + (j / 32) * col_tiles * kTile + ((j % 32) / 2) * 32;
    for (int64_t dt = 0; dt < col_tiles; ++dt) {
      const __m512i x0 = v0 ? _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v0 + dt * 16)))
                            : _mm512_setzero_si512();
      const __m512i x1 = v1 ? _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v1 + dt * 16)))
                            : _mm512_setzero_si512();
      _mm512_storeu_si512(row + dt * kTile, _mm512_permutex2var_epi16(x0, interleave, x1));
    }
  }
}

// The block's queries as bf16 k pairs, tile per d chunk: element (kp, r, p)
// at c * 512 + kp * 32 + r * 2 + p = Q[r][c * 32 + 2 kp + p]; rows past
// `rows` are zero. Virtual row r is token tb + r / group, head r % group.
void QueryPairs(const AmxAttentionArgs& a, const Dims& m, int64_t h, int64_t row0, int64_t tb, int64_t rows,
                uint16_t* qt) {
  std::memset(qt, 0, m.d_chunks * kTile * 2);
  for (int64_t r = 0; r < rows; ++r) {
    const float* qr = a.q + ((row0 + tb + r / m.group) * a.q_heads + h * m.group + r % m.group) * m.d;
    for (int64_t c = 0; c < m.d; ++c) {
      qt[(c / 32) * kTile + ((c % 32) / 2) * 32 + r * 2 + c % 2] = model::FloatToBF16(qr[c]);
    }
  }
}

// S^T for keys [0, keys): st[j * 16 + r] = K_j . Q_r, 64 keys (four C
// tiles, tmm0-3) per step; the query pairs of a chunk in tmm4, K tiles
// rotating over tmm5-7.
STRATA_AMX void ScoresOnTiles(const Dims& m, const uint16_t* kb, const uint16_t* qt, int64_t keys, float* st) {
  const int64_t ldk = m.d * 2;
  for (int64_t j0 = 0; j0 < keys; j0 += 64) {
    STRATA_TILE_ZERO(0);
    STRATA_TILE_ZERO(1);
    STRATA_TILE_ZERO(2);
    STRATA_TILE_ZERO(3);
    for (int64_t c = 0; c < m.d_chunks; ++c) {
      const uint16_t* k0 = kb + j0 * m.d + c * 32;
      STRATA_TILE_LOAD(4, qt + c * kTile, 64);
      STRATA_TILE_LOAD(5, k0, ldk);
      STRATA_TILE_DPBF16(0, 5, 4);
      STRATA_TILE_LOAD(6, k0 + 16 * m.d, ldk);
      STRATA_TILE_DPBF16(1, 6, 4);
      STRATA_TILE_LOAD(7, k0 + 32 * m.d, ldk);
      STRATA_TILE_DPBF16(2, 7, 4);
      STRATA_TILE_LOAD(5, k0 + 48 * m.d, ldk);
      STRATA_TILE_DPBF16(3, 5, 4);
    }
    STRATA_TILE_STORE(0, st + j0 * 16, 64);
    STRATA_TILE_STORE(1, st + (j0 + 16) * 16, 64);
    STRATA_TILE_STORE(2, st + (j0 + 32) * 16, 64);
    STRATA_TILE_STORE(3, st + (j0 + 48) * 16, 64);
  }
}

// The softmax of one virtual row over its visible keys, from dot products
// dot(j): scale, max, exp, sum in key order, divide; writes P as bf16
// (zeros to `pad`). The order of the vector backend's softmax, with
// ExpScalar (vec_exp.h) for std::exp. The tile kernel runs the same
// operations for 16 rows at once (Softmax16), bit for bit.
template <typename Dot>
void SoftmaxRow(Dot dot, int64_t visible, int64_t pad, float scale, float* tmp, uint16_t* p) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < visible; ++j) {
    tmp[j] = dot(j) * scale;
    mx = std::max(mx, tmp[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < visible; ++j) {
    tmp[j] = ExpScalar(tmp[j] - mx);
    sum += tmp[j];
  }
  for (int64_t j = 0; j < visible; ++j) p[j] = model::FloatToBF16(tmp[j] / sum);
  for (int64_t j = visible; j < pad; ++j) p[j] = 0;
}

// SoftmaxRow for the block's 16 virtual rows at once, rows as lanes:
// st[j * 16 + r] is row r's dot with key j (keys [0, vmax)), visible[r]
// its visible keys (0: a padding row, all zeros). Keys a row does not see
// score -inf, whose exp is an exact 0, so each lane's max and its sum in
// key order are the scalar row's. et: [vmax][16] f32 scratch; P row r at
// pb + r * p_ld, zeros from the row's visible keys to `pad`.
__attribute__((target("avx512f"))) void Softmax16(const float* st, const int32_t* visible, int64_t vmax,
                                                  int64_t pad, float scale, float* et, uint16_t* pb,
                                                  int64_t p_ld) {
  const __m512i vis = _mm512_loadu_si512(visible);
  const __m512 vscale = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
  __m512 mx = ninf;
  for (int64_t j = 0; j < vmax; ++j) {
    const __mmask16 seen = _mm512_cmpgt_epi32_mask(vis, _mm512_set1_epi32(static_cast<int32_t>(j)));
    const __m512 s = _mm512_mask_mul_ps(ninf, seen, _mm512_loadu_ps(st + j * 16), vscale);
    _mm512_storeu_ps(et + j * 16, s);
    mx = _mm512_max_ps(mx, s);
  }
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < vmax; ++j) {
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_loadu_ps(et + j * 16), mx));
    _mm512_storeu_ps(et + j * 16, e);
    sum = _mm512_add_ps(sum, e);
  }
  alignas(64) float sums[16];
  _mm512_store_ps(sums, sum);
  const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                         _mm512_set1_epi32(16));
  const __m512i round_bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
  for (int r = 0; r < 16; ++r) {
    uint16_t* p = pb + r * p_ld;
    if (visible[r] == 0) {
      std::memset(p, 0, pad * 2);
      continue;
    }
    const __m512 vsum = _mm512_set1_ps(sums[r]);
    for (int64_t j0 = 0; j0 < pad; j0 += 16) {
      const __mmask16 in = j0 >= vmax ? 0 : vmax - j0 >= 16 ? 0xffff : (1u << (vmax - j0)) - 1;
      const __m512 e = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, idx, et + j0 * 16 + r, 4);
      // model::FloatToBF16: round to nearest even (no NaN here).
      const __m512i bits = _mm512_castps_si512(_mm512_div_ps(e, vsum));
      const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
      const __m512i h = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(round_bias, odd)), 16);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + j0), _mm512_cvtepi32_epi16(h));
    }
  }
}

// O = P V for key chunks [0, chunks): column tiles in fours (tmm0-3), the P
// chunk in tmm4, V pair tiles rotating over tmm5-7; o: [16][d] f32.
STRATA_AMX void ValuesOnTiles(const Dims& m, const uint16_t* pb, const uint16_t* vp, int64_t chunks, float* o) {
  const int64_t col_tiles = m.d / 16, ldo = m.d * 4;
  for (int64_t t0 = 0; t0 < col_tiles; t0 += 4) {
    const int64_t nt = std::min<int64_t>(4, col_tiles - t0);
    STRATA_TILE_ZERO(0);
    STRATA_TILE_ZERO(1);
    STRATA_TILE_ZERO(2);
    STRATA_TILE_ZERO(3);
    for (int64_t kc = 0; kc < chunks; ++kc) {
      const uint16_t* v0 = vp + (kc * col_tiles + t0) * kTile;
      STRATA_TILE_LOAD(4, pb + kc * 32, m.p_ld * 2);
      STRATA_TILE_LOAD(5, v0, 64);
      STRATA_TILE_DPBF16(0, 4, 5);
      if (nt > 1) {
        STRATA_TILE_LOAD(6, v0 + kTile, 64);
        STRATA_TILE_DPBF16(1, 4, 6);
      }
      if (nt > 2) {
        STRATA_TILE_LOAD(7, v0 + 2 * kTile, 64);
        STRATA_TILE_DPBF16(2, 4, 7);
      }
      if (nt > 3) {
        STRATA_TILE_LOAD(5, v0 + 3 * kTile, 64);
        STRATA_TILE_DPBF16(3, 4, 5);
      }
    }
    STRATA_TILE_STORE(0, o + t0 * 16, ldo);
    if (nt > 1) STRATA_TILE_STORE(1, o + (t0 + 1) * 16, ldo);
    if (nt > 2) STRATA_TILE_STORE(2, o + (t0 + 2) * 16, ldo);
    if (nt > 3) STRATA_TILE_STORE(3, o + (t0 + 3) * 16, ldo);
  }
}

float* OutRow(const AmxAttentionArgs& a, const Dims& m, int64_t h, int64_t row0, int64_t tb, int64_t r) {
  return a.out + ((row0 + tb + r / m.group) * a.q_heads + h * m.group + r % m.group) * m.d;
}

// ---- The tile model, in plain C++ (amx_matmul.h) ---------------------------

inline float Bf(uint16_t h) { return model::BF16ToFloat(h); }
inline float Ftz(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v; }

// One output of a tile product: chunks of 32 along k, x(i) and y(i) the
// bf16 operands of product i.
template <typename X, typename Y>
float TileDot(X x, Y y, int64_t chunks) {
  float acc = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) {
    float sum[2] = {0.0f, 0.0f};
    for (int64_t i = c * 32; i < c * 32 + 32; ++i) {
      sum[i % 2] = Ftz(static_cast<float>(static_cast<double>(sum[i % 2]) +
                                          static_cast<double>(Ftz(Bf(x(i)))) * Ftz(Bf(y(i)))));
    }
    acc = Ftz(acc + Ftz(sum[0] + sum[1]));
  }
  return acc;
}

}  // namespace

bool AmxAttentionFits(int64_t q_heads, int64_t kv_heads, int64_t d) {
  return kv_heads > 0 && q_heads % kv_heads == 0 && q_heads / kv_heads <= 16 && d % 32 == 0 && d > 0 && d <= 256;
}

void AmxAttentionHead(const AmxAttentionArgs& a, int64_t h, int64_t row0, int64_t n, int64_t cached,
                      const int64_t* slots) {
  if (n <= 0) return;
  const Dims m = DimsOf(a, n, cached);
  auto* kb = ThreadScratchOf<uint16_t>(kScratchAttnKeys, m.keys_pad * m.d);
  auto* vp = ThreadScratchOf<uint16_t>(kScratchAttnValues, m.keys_pad * m.d);
  auto* qt = ThreadScratchOf<uint16_t>(kScratchAttnQuery, m.d_chunks * kTile);
  auto* st = ThreadScratchOf<float>(kScratchAttnScores, 2 * m.keys_pad * 16);  // S^T, then the exps
  auto* pb = ThreadScratchOf<uint16_t>(kScratchAttnProbs, 16 * m.p_ld);
  auto* o = ThreadScratchOf<float>(kScratchAttnOut, 16 * m.d);
  float* et = st + m.keys_pad * 16;
  GatherKv(a, m, h, slots, kb, vp);
  ConfigureTiles();
  for (int64_t tb = 0; tb < n; tb += m.tokens) {
    const int64_t rows = std::min(m.tokens, n - tb) * m.group;
    const int64_t vmax = cached + std::min(n, tb + m.tokens);  // keys the block's last token sees
    QueryPairs(a, m, h, row0, tb, rows, qt);
    ScoresOnTiles(m, kb, qt, vmax, st);
    const int64_t pad = RoundUp(vmax, 32);
    alignas(64) int32_t visible[16];
    for (int64_t r = 0; r < 16; ++r) visible[r] = r < rows ? static_cast<int32_t>(cached + tb + r / m.group + 1) : 0;
    Softmax16(st, visible, vmax, pad, a.scale, et, pb, m.p_ld);
    ValuesOnTiles(m, pb, vp, pad / 32, o);
    for (int64_t r = 0; r < rows; ++r) std::memcpy(OutRow(a, m, h, row0, tb, r), o + r * m.d, m.d * 4);
  }
  ReleaseTiles();
}

void AmxAttentionStep(ThreadPool& pool, const StepLayout& layout, const std::vector<std::vector<int64_t>>& slots,
                      const AmxAttentionArgs& a) {
  std::vector<int64_t> row0(layout.sequences.size());
  for (size_t i = 1; i < row0.size(); ++i) row0[i] = row0[i - 1] + layout.sequences[i - 1].num_tokens;
  pool.ParallelFor(static_cast<int64_t>(row0.size()) * a.kv_heads, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t i = t / a.kv_heads;
      const SequenceChunk& seq = layout.sequences[i];
      AmxAttentionHead(a, t % a.kv_heads, row0[i], seq.num_tokens, seq.cached_tokens, slots[i].data());
    }
  });
}

void AmxAttentionHeadTwin(const AmxAttentionArgs& a, int64_t h, int64_t row0, int64_t n, int64_t cached,
                          const int64_t* slots) {
  if (n <= 0) return;
  const Dims m = DimsOf(a, n, cached);
  std::vector<uint16_t> q(m.d), p(m.keys_pad);
  std::vector<float> tmp(m.keys_pad);
  auto k_at = [&](int64_t j, int64_t i) { return a.k[slots[j] * m.width + h * m.d + i]; };
  auto v_at = [&](int64_t j, int64_t i) { return a.v[slots[j] * m.width + h * m.d + i]; };
  for (int64_t tb = 0; tb < n; tb += m.tokens) {
    const int64_t rows = std::min(m.tokens, n - tb) * m.group;
    for (int64_t r = 0; r < rows; ++r) {
      const float* qr = a.q + ((row0 + tb + r / m.group) * a.q_heads + h * m.group + r % m.group) * m.d;
      for (int64_t i = 0; i < m.d; ++i) q[i] = model::FloatToBF16(qr[i]);
      const int64_t visible = cached + tb + r / m.group + 1, pad = RoundUp(visible, 32);
      SoftmaxRow(
          [&](int64_t j) { return TileDot([&](int64_t i) { return k_at(j, i); }, [&](int64_t i) { return q[i]; },
                                          m.d_chunks); },
          visible, pad, a.scale, tmp.data(), p.data());
      float* out = OutRow(a, m, h, row0, tb, r);
      for (int64_t c = 0; c < m.d; ++c) {
        out[c] = TileDot([&](int64_t j) { return p[j]; },
                         [&](int64_t j) { return j < visible ? v_at(j, c) : uint16_t{0}; }, pad / 32);
      }
    }
  }
}

}  // namespace strata::kernels::cpu
