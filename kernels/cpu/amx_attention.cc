#include "kernels/cpu/amx_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/amx.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

constexpr int64_t kTile = 512;  // bf16 elements of a 16 x 32 tile

#define STRATA_AMX __attribute__((target("amx-tile,amx-bf16")))

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Grow-only 64-byte-aligned per-thread buffers, one per use.
template <int kSlot>
void* Scratch(int64_t bytes) {
  struct Buffer {
    void* p = nullptr;
    int64_t n = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer b;
  if (b.n < bytes) {
    std::free(b.p);
    b.n = RoundUp(bytes, 4096);
    b.p = std::aligned_alloc(64, b.n);
  }
  return b.p;
}

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

// The vector backend's softmax for virtual row r over its visible keys,
// from dot products dot(j); writes P as bf16 (zeros to `pad`).
template <typename Dot>
void SoftmaxRow(Dot dot, int64_t visible, int64_t pad, float scale, float* tmp, uint16_t* p) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < visible; ++j) {
    tmp[j] = dot(j) * scale;
    mx = std::max(mx, tmp[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < visible; ++j) {
    tmp[j] = std::exp(tmp[j] - mx);
    sum += tmp[j];
  }
  for (int64_t j = 0; j < visible; ++j) p[j] = model::FloatToBF16(tmp[j] / sum);
  for (int64_t j = visible; j < pad; ++j) p[j] = 0;
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
  auto* kb = static_cast<uint16_t*>(Scratch<0>(m.keys_pad * m.d * 2));
  auto* vp = static_cast<uint16_t*>(Scratch<1>(m.keys_pad * m.d * 2));
  auto* qt = static_cast<uint16_t*>(Scratch<2>(m.d_chunks * kTile * 2));
  auto* st = static_cast<float*>(Scratch<3>(m.keys_pad * 16 * 4));
  auto* pb = static_cast<uint16_t*>(Scratch<4>(16 * m.p_ld * 2));
  auto* tmp = static_cast<float*>(Scratch<5>(m.keys_pad * 4));
  auto* o = static_cast<float*>(Scratch<6>(16 * m.d * 4));
  GatherKv(a, m, h, slots, kb, vp);
  ConfigureTiles();
  for (int64_t tb = 0; tb < n; tb += m.tokens) {
    const int64_t rows = std::min(m.tokens, n - tb) * m.group;
    const int64_t vmax = cached + std::min(n, tb + m.tokens);  // keys the block's last token sees
    QueryPairs(a, m, h, row0, tb, rows, qt);
    ScoresOnTiles(m, kb, qt, vmax, st);
    const int64_t pad = RoundUp(vmax, 32);
    for (int64_t r = 0; r < 16; ++r) {
      const int64_t visible = r < rows ? cached + tb + r / m.group + 1 : 0;
      SoftmaxRow([&](int64_t j) { return st[j * 16 + r]; }, visible, pad, a.scale, tmp, pb + r * m.p_ld);
    }
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
