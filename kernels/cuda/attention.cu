#include "kernels/cuda/attention.h"

#include <mma.h>

#include <algorithm>
#include <cmath>

namespace strata::kernels::cuda {
namespace {

using namespace nvcuda;

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kKeyTile = 64;   // keys per inner iteration
constexpr int64_t kAlign = 256;

int64_t AlignUp(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

struct Offsets {
  int64_t seqs, tables, items16, items64, combine, meta_end, partial_o, partial_lse, end;
};

Offsets ComputeOffsets(const AttentionPlan& p) {
  Offsets o;
  o.seqs = 0;
  o.tables = AlignUp(o.seqs + sizeof(AttnSeq) * p.seqs.size(), kAlign);
  o.items16 = AlignUp(o.tables + sizeof(int32_t) * p.block_tables.size(), kAlign);
  o.items64 = AlignUp(o.items16 + sizeof(AttnItem) * p.items16.size(), kAlign);
  o.combine = AlignUp(o.items64 + sizeof(AttnItem) * p.items64.size(), kAlign);
  o.meta_end = AlignUp(o.combine + sizeof(AttnCombineTile) * p.combine.size(), kAlign);
  const int64_t heads_dim = static_cast<int64_t>(p.dims.kv_heads) * p.dims.head_dim;
  o.partial_o = o.meta_end;
  o.partial_lse = AlignUp(o.partial_o + sizeof(float) * p.partial_rows * heads_dim, kAlign);
  o.end = AlignUp(o.partial_lse + sizeof(float) * p.partial_rows * p.dims.kv_heads, kAlign);
  return o;
}

// Shared-memory layout of one thread block; strides are padded so rows start
// on different banks and every WMMA pointer stays 32-byte aligned.
template <int R, int D>
struct Smem {
  static constexpr int kQs = D + 8;        // bf16 stride of Q, K, V rows
  static constexpr int kSs = kKeyTile + 4; // f32 stride of scores
  static constexpr int kPs = kKeyTile + 8; // bf16 stride of probabilities
  static constexpr int kOs = D + 4;        // f32 stride of the output accumulator
  static constexpr int q = 0;
  static constexpr int k = q + R * kQs * 2;
  static constexpr int v = k + kKeyTile * kQs * 2;
  static constexpr int s = v + kKeyTile * kQs * 2;
  static constexpr int p = s + R * kSs * 4;
  static constexpr int o = p + R * kPs * 2;
  static constexpr int row_m = o + R * kOs * 4;
  static constexpr int row_l = row_m + R * 4;
  static constexpr int row_alpha = row_l + R * 4;
  static constexpr int row_limit = row_alpha + R * 4;
  static constexpr int bytes = row_limit + R * 4;
};

template <int R, int D>
__global__ void __launch_bounds__(kThreads)
AttentionKernel(const AttnSeq* __restrict__ seqs, const int32_t* __restrict__ tables,
                const AttnItem* __restrict__ items, int32_t q_heads, int32_t kv_heads,
                int32_t block_size, float scale, const float* __restrict__ q,
                const __nv_bfloat16* __restrict__ k_cache, const __nv_bfloat16* __restrict__ v_cache,
                float* __restrict__ out, float* __restrict__ partial_o,
                float* __restrict__ partial_lse) {
  using L = Smem<R, D>;
  extern __shared__ __align__(128) unsigned char smem[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem + L::q);
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem + L::k);
  __nv_bfloat16* Vs = reinterpret_cast<__nv_bfloat16*>(smem + L::v);
  float* Ss = reinterpret_cast<float*>(smem + L::s);
  __nv_bfloat16* Ps = reinterpret_cast<__nv_bfloat16*>(smem + L::p);
  float* Os = reinterpret_cast<float*>(smem + L::o);
  float* row_m = reinterpret_cast<float*>(smem + L::row_m);
  float* row_l = reinterpret_cast<float*>(smem + L::row_l);
  float* row_alpha = reinterpret_cast<float*>(smem + L::row_alpha);
  int32_t* row_limit = reinterpret_cast<int32_t*>(smem + L::row_limit);

  const AttnItem item = items[blockIdx.x];
  const AttnSeq seq = seqs[item.seq];
  const int kvh = blockIdx.y;
  const int group = q_heads / kv_heads;
  const int valid_rows = seq.num_tokens * group;
  const int tid = threadIdx.x;
  const int warp = tid / 32;

  // Q tile (bf16) and the per-row causal limits.
  for (int idx = tid; idx < R * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    const int vr = item.v_begin + r;
    float val = 0.0f;
    if (vr < valid_rows) {
      const int token = vr / group, head = kvh * group + vr % group;
      val = q[((static_cast<int64_t>(seq.first_row) + token) * q_heads + head) * D + d];
    }
    Qs[r * L::kQs + d] = __float2bfloat16(val);
  }
  for (int idx = tid * 4; idx < R * L::kOs; idx += kThreads * 4) {
    *reinterpret_cast<float4*>(Os + idx) = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  for (int r = tid; r < R; r += kThreads) {
    const int vr = item.v_begin + r;
    row_limit[r] = vr < valid_rows ? seq.cached_tokens + vr / group + 1 : 0;
    row_m[r] = -INFINITY;
    row_l[r] = 0.0f;
  }
  __syncthreads();

  const int32_t* table = tables + seq.table_offset;
  constexpr int kChunks = D / 8;  // 16-byte chunks per K/V row
  constexpr int kThreadsPerRow = kThreads / R;
  constexpr int kLoads = kKeyTile * kChunks / kThreads;  // 16-byte loads per thread per tile
  // The next tile's K and V wait in registers while this tile computes.
  uint4 kreg[kLoads], vreg[kLoads];
  auto load_tile = [&](int kt) {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int idx = tid + i * kThreads;
      const int row = idx / kChunks, c = idx % kChunks;
      const int j = kt + row;
      kreg[i] = make_uint4(0, 0, 0, 0);
      vreg[i] = make_uint4(0, 0, 0, 0);
      if (j < item.kv_end) {
        const int64_t slot = static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
        const int64_t off = (slot * kv_heads + kvh) * D + c * 8;
        kreg[i] = __ldg(reinterpret_cast<const uint4*>(k_cache + off));
        vreg[i] = __ldg(reinterpret_cast<const uint4*>(v_cache + off));
      }
    }
  };
  if (item.kv_begin < item.kv_end) load_tile(item.kv_begin);
  for (int kt = item.kv_begin; kt < item.kv_end; kt += kKeyTile) {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int idx = tid + i * kThreads;
      const int row = idx / kChunks, c = idx % kChunks;
      *reinterpret_cast<uint4*>(Ks + row * L::kQs + c * 8) = kreg[i];
      *reinterpret_cast<uint4*>(Vs + row * L::kQs + c * 8) = vreg[i];
    }
    __syncthreads();
    if (kt + kKeyTile < item.kv_end) load_tile(kt + kKeyTile);

    // S = Q K^T on tensor cores.
    constexpr int kSFrags = (R / 16) * (kKeyTile / 16);
    for (int f = warp; f < kSFrags; f += kWarps) {
      const int fm = f / (kKeyTile / 16), fn = f % (kKeyTile / 16);
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < D; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
        wmma::load_matrix_sync(a, Qs + fm * 16 * L::kQs + kk, L::kQs);
        wmma::load_matrix_sync(b, Ks + fn * 16 * L::kQs + kk, L::kQs);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(Ss + fm * 16 * L::kSs + fn * 16, acc, L::kSs, wmma::mem_row_major);
    }
    __syncthreads();

    // Online softmax, kThreadsPerRow lanes per row (consecutive lanes).
    {
      const int r = tid / kThreadsPerRow, part = tid % kThreadsPerRow;
      const int limit = min(row_limit[r], item.kv_end);
      float mx = -INFINITY;
      for (int c = part; c < kKeyTile; c += kThreadsPerRow) {
        if (kt + c < limit) mx = fmaxf(mx, Ss[r * L::kSs + c] * scale);
      }
#pragma unroll
      for (int off = kThreadsPerRow / 2; off > 0; off /= 2) {
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      }
      const float m_old = row_m[r];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      for (int c = part; c < kKeyTile; c += kThreadsPerRow) {
        float p = 0.0f;
        if (kt + c < limit) p = __expf(Ss[r * L::kSs + c] * scale - m_new);
        const __nv_bfloat16 pb = __float2bfloat16(p);
        Ps[r * L::kPs + c] = pb;
        sum += __bfloat162float(pb);
      }
#pragma unroll
      for (int off = kThreadsPerRow / 2; off > 0; off /= 2) {
        sum += __shfl_xor_sync(0xffffffffu, sum, off);
      }
      __syncwarp();
      if (part == 0) {
        const float alpha = m_new == -INFINITY ? 1.0f : __expf(m_old - m_new);
        row_alpha[r] = alpha;
        row_l[r] = row_l[r] * alpha + sum;
        row_m[r] = m_new;
      }
    }
    __syncthreads();
    for (int idx = tid; idx < R * D; idx += kThreads) {
      const int r = idx / D, d = idx % D;
      Os[r * L::kOs + d] *= row_alpha[r];
    }
    __syncthreads();

    // O += P V on tensor cores.
    constexpr int kOFrags = (R / 16) * (D / 16);
    for (int f = warp; f < kOFrags; f += kWarps) {
      const int fm = f / (D / 16), fn = f % (D / 16);
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      float* o_tile = Os + fm * 16 * L::kOs + fn * 16;
      wmma::load_matrix_sync(acc, o_tile, L::kOs, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kKeyTile; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
        wmma::load_matrix_sync(a, Ps + fm * 16 * L::kPs + kk, L::kPs);
        wmma::load_matrix_sync(b, Vs + kk * L::kQs + fn * 16, L::kQs);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(o_tile, acc, L::kOs, wmma::mem_row_major);
    }
    __syncthreads();
  }

  // Output: normalized rows, directly or into this split's partial slot.
  for (int idx = tid; idx < R * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    const int vr = item.v_begin + r;
    if (vr >= valid_rows) continue;
    const float l = row_l[r];
    const float val = l > 0.0f ? Os[r * L::kOs + d] / l : 0.0f;
    if (item.partial_row < 0) {
      const int token = vr / group, head = kvh * group + vr % group;
      out[((static_cast<int64_t>(seq.first_row) + token) * q_heads + head) * D + d] = val;
    } else {
      partial_o[((static_cast<int64_t>(item.partial_row) + r) * kv_heads + kvh) * D + d] = val;
    }
  }
  if (item.partial_row >= 0) {
    for (int r = tid; r < R; r += kThreads) {
      const float l = row_l[r];
      partial_lse[(static_cast<int64_t>(item.partial_row) + r) * kv_heads + kvh] =
          l > 0.0f ? row_m[r] + __logf(l) : -INFINITY;
    }
  }
}

// Decode-style tiles (16 virtual rows: one token's whole query group, or a
// few tokens of a small group) on register-resident tensor-core fragments
// (mma.m16n8k16, bf16 in, f32 accumulate). Each warp walks its own 16-key
// chunks of the split with its own online softmax, so the loop needs no
// block barrier; the four warps merge once at the end.
//
// Operands are loaded straight from the paged cache into fragments. The
// head dimension is permuted consistently between Q and K (a dot product
// does not care about order) so each lane's K fragment is one 16-byte load,
// and the output dimension is permuted for V so each lane's V fragment is
// contiguous too; the permutation is undone when the output is written.
__device__ inline uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ inline void MmaBf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int D>
__global__ void __launch_bounds__(kThreads)
DecodeKernel(const AttnSeq* __restrict__ seqs, const int32_t* __restrict__ tables,
             const AttnItem* __restrict__ items, int32_t q_heads, int32_t kv_heads,
             int32_t block_size, float scale, const float* __restrict__ q,
             const __nv_bfloat16* __restrict__ k_cache, const __nv_bfloat16* __restrict__ v_cache,
             float* __restrict__ out, float* __restrict__ partial_o, float* __restrict__ partial_lse) {
  constexpr int kKSteps = D / 16;   // k-steps of QK^T
  constexpr int kKLoads = D / 32;   // 16-byte K loads per lane per key
  constexpr int kNTiles = D / 8;    // n-tiles of the output
  constexpr int kVLoads = D / 64;   // 16-byte V loads per lane per key
  constexpr int kDimsPerGroup = D / 8;
  __shared__ float sm_m[kWarps][16], sm_l[kWarps][16];
  __shared__ float sm_o[kWarps][16][D + 1];

  const AttnItem item = items[blockIdx.x];
  const AttnSeq seq = seqs[item.seq];
  const int kvh = blockIdx.y;
  const int group = q_heads / kv_heads;
  const int valid_rows = seq.num_tokens * group;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;

  // This lane's two rows (g and g + 8): validity, causal limit, Q pointer.
  int limit[2];
  const float* qrow[2];
  for (int h = 0; h < 2; ++h) {
    const int vr = item.v_begin + g + 8 * h;
    const bool valid = vr < valid_rows;
    const int token = valid ? vr / group : 0, head = kvh * group + (valid ? vr % group : 0);
    limit[h] = valid ? min(seq.cached_tokens + token + 1, item.kv_end) : 0;
    qrow[h] = valid ? q + ((static_cast<int64_t>(seq.first_row) + token) * q_heads + head) * D : nullptr;
  }
  // Q fragments with the permuted head dimension (see the K loads below):
  // k-step ks uses real dims t*8 + 32*(ks/2) + 4*(ks%2) + {0,1} and +{2,3}.
  uint32_t qa[kKSteps][4];
#pragma unroll
  for (int ks = 0; ks < kKSteps; ++ks) {
    const int d0 = t * 8 + 32 * (ks / 2) + 4 * (ks % 2);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float v0 = 0, v1 = 0, v2 = 0, v3 = 0;
      if (qrow[h]) {
        const float4 f = *reinterpret_cast<const float4*>(qrow[h] + d0);
        v0 = f.x * scale;
        v1 = f.y * scale;
        v2 = f.z * scale;
        v3 = f.w * scale;
      }
      qa[ks][h] = PackBf16(v0, v1);      // a0a1 (row g) / a2a3 (row g+8)
      qa[ks][2 + h] = PackBf16(v2, v3);  // a4a5 / a6a7
    }
  }

  float o[kNTiles][4];
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int32_t* table = tables + seq.table_offset;
  const int64_t head_off = static_cast<int64_t>(kvh) * D;
  auto slot_of = [&](int j) -> int64_t {
    return static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
  };
  // Chunks start at multiples of 16 keys; when blocks hold a multiple of 16
  // tokens a chunk sits inside one block: one table lookup per chunk.
  const bool one_block_per_chunk = block_size % 16 == 0;
  auto chunk_slot = [&](int base) -> int64_t { return one_block_per_chunk ? slot_of(base) : 0; };
  auto key_slot = [&](int base, int64_t base_slot, int j) -> int64_t {
    return one_block_per_chunk ? base_slot + (j - base) : slot_of(j);
  };
  const int64_t row_stride = static_cast<int64_t>(kv_heads) * D;

  // K rows of keys base+g (n-tile 0) and base+8+g (n-tile 1): real dims
  // t*8 + 32*i .. +8 for i < kKLoads.
  uint4 kr[2][kKLoads];
  auto load_k = [&](int base, int64_t base_slot) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      const int j = base + 8 * n + g;
      if (j < item.kv_end) {
        const __nv_bfloat16* row = k_cache + key_slot(base, base_slot, j) * row_stride + head_off;
#pragma unroll
        for (int i = 0; i < kKLoads; ++i) kr[n][i] = __ldg(reinterpret_cast<const uint4*>(row + t * 8 + 32 * i));
      } else {
#pragma unroll
        for (int i = 0; i < kKLoads; ++i) kr[n][i] = make_uint4(0, 0, 0, 0);
      }
    }
  };
  // V rows of keys base + {2t, 2t+1, 8+2t, 9+2t}: dims g*kDimsPerGroup ...
  uint4 vr[4][kVLoads];
  auto load_v = [&](int base, int64_t base_slot) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = base + (e / 2) * 8 + 2 * t + (e % 2);
      if (j < item.kv_end) {
        const __nv_bfloat16* row =
            v_cache + key_slot(base, base_slot, j) * row_stride + head_off + g * kDimsPerGroup;
#pragma unroll
        for (int i = 0; i < kVLoads; ++i) vr[e][i] = __ldg(reinterpret_cast<const uint4*>(row + 8 * i));
      } else {
#pragma unroll
        for (int i = 0; i < kVLoads; ++i) vr[e][i] = make_uint4(0, 0, 0, 0);
      }
    }
  };
  // Software pipeline without extra registers: the next chunk's K is loaded
  // as soon as this chunk's scores are done with K, and the next V as soon
  // as this chunk's PV product is done with V.
  const int first = item.kv_begin + warp * 16;
  int64_t next_slot = 0;
  if (first < item.kv_end) {
    next_slot = chunk_slot(first);
    load_k(first, next_slot);
    load_v(first, next_slot);
  }
  for (int base = first; base < item.kv_end; base += kWarps * 16) {
    const int next = base + kWarps * 16;
    if (next < item.kv_end) next_slot = chunk_slot(next);
    // S = Q K^T: two n-tiles of 8 keys.
    // Four independent accumulator chains (2 n-tiles x even/odd k-steps)
    // halve the dependent tensor-core latency per chunk.
    float sc[2][4], sc_odd[2][4];
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int c = 0; c < 4; ++c) sc[n][c] = sc_odd[n][c] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const uint4 u = kr[n][ks / 2];
        if (ks % 2 == 0) {
          MmaBf16(sc[n], qa[ks][0], qa[ks][1], qa[ks][2], qa[ks][3], u.x, u.y);
        } else {
          MmaBf16(sc_odd[n], qa[ks][0], qa[ks][1], qa[ks][2], qa[ks][3], u.z, u.w);
        }
      }
#pragma unroll
      for (int c = 0; c < 4; ++c) sc[n][c] += sc_odd[n][c];
    }
    if (next < item.kv_end) load_k(next, next_slot);
    // Online softmax. sc[n][c]: row g + 8*(c/2), key base + 8n + 2t + c%2.
    uint32_t pa[4];
    float alphas[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int j = base + 8 * n + 2 * t + c;
          if (j >= limit[h]) sc[n][2 * h + c] = -INFINITY;
          mx = fmaxf(mx, sc[n][2 * h + c]);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[h], mx);
      const float alpha = m_new == -INFINITY ? 1.0f : __expf(m[h] - m_new);
      float p[2][2];
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float s = sc[n][2 * h + c];
          p[n][c] = s == -INFINITY ? 0.0f : __expf(s - m_new);
        }
      }
      const uint32_t p0 = PackBf16(p[0][0], p[0][1]), p1 = PackBf16(p[1][0], p[1][1]);
      // Sum the bf16-rounded probabilities the PV product uses.
      const __nv_bfloat162 r0 = *reinterpret_cast<const __nv_bfloat162*>(&p0);
      const __nv_bfloat162 r1 = *reinterpret_cast<const __nv_bfloat162*>(&p1);
      l[h] = l[h] * alpha + __bfloat162float(r0.x) + __bfloat162float(r0.y) + __bfloat162float(r1.x) +
             __bfloat162float(r1.y);
      m[h] = m_new;
      pa[h] = p0;      // a0a1 / a2a3: keys 2t, 2t+1 (n-tile 0)
      pa[2 + h] = p1;  // a4a5 / a6a7: keys 8+2t, 9+2t (n-tile 1)
      alphas[h] = alpha;
    }
    // Rescale the accumulators only when some row's maximum moved.
    if (__any_sync(0xffffffffu, alphas[0] != 1.0f || alphas[1] != 1.0f)) {
#pragma unroll
      for (int jn = 0; jn < kNTiles; ++jn) {
        o[jn][0] *= alphas[0];
        o[jn][1] *= alphas[0];
        o[jn][2] *= alphas[1];
        o[jn][3] *= alphas[1];
      }
    }
    // O += P V. n-tile jn, column g holds real dim g*kDimsPerGroup + jn.
#pragma unroll
    for (int jn = 0; jn < kNTiles; ++jn) {
      const int word = (jn / 2) % 4, chunk = jn / 8;
      const uint32_t sel = (jn % 2 == 0) ? 0x5410 : 0x7632;
      auto w = [&](int e) {
        const uint4 u = vr[e][chunk];
        return word == 0 ? u.x : word == 1 ? u.y : word == 2 ? u.z : u.w;
      };
      const uint32_t b0 = __byte_perm(w(0), w(1), sel);
      const uint32_t b1 = __byte_perm(w(2), w(3), sel);
      MmaBf16(o[jn], pa[0], pa[1], pa[2], pa[3], b0, b1);
    }
    if (next < item.kv_end) load_v(next, next_slot);
  }

  // Merge the four warps: row sums across the lanes of a group first.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
  if (t == 0) {
    sm_m[warp][g] = m[0];
    sm_m[warp][g + 8] = m[1];
    sm_l[warp][g] = l[0];
    sm_l[warp][g + 8] = l[1];
  }
#pragma unroll
  for (int jn = 0; jn < kNTiles; ++jn) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int row = g + 8 * (c / 2);
      const int dim = (2 * t + (c % 2)) * kDimsPerGroup + jn;
      sm_o[warp][row][dim] = o[jn][c];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < 16 * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    const int vrow = item.v_begin + r;
    if (vrow >= valid_rows) continue;
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, sm_m[w][r]);
    float num = 0.0f, den = 0.0f;
    if (mm != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float f = sm_m[w][r] == -INFINITY ? 0.0f : __expf(sm_m[w][r] - mm);
        num += f * sm_o[w][r][d];
        den += f * sm_l[w][r];
      }
    }
    const float val = den > 0.0f ? num / den : 0.0f;
    if (item.partial_row < 0) {
      const int token = vrow / group, head = kvh * group + vrow % group;
      out[((static_cast<int64_t>(seq.first_row) + token) * q_heads + head) * D + d] = val;
    } else {
      partial_o[((static_cast<int64_t>(item.partial_row) + r) * kv_heads + kvh) * D + d] = val;
      if (d == 0) {
        partial_lse[(static_cast<int64_t>(item.partial_row) + r) * kv_heads + kvh] =
            den > 0.0f ? mm + __logf(den) : -INFINITY;
      }
    }
  }
}

// Merges the splits of one row of one tile: blockIdx.x the tile, blockIdx.y
// the KV head, blockIdx.z the row. Split weights go to shared memory, then
// each thread sums its output elements over the splits.
__global__ void CombineKernel(const AttnSeq* __restrict__ seqs,
                              const AttnCombineTile* __restrict__ tiles, int32_t q_heads,
                              int32_t kv_heads, int32_t head_dim,
                              const float* __restrict__ partial_o,
                              const float* __restrict__ partial_lse, float* __restrict__ out) {
  extern __shared__ float weights[];  // [num_splits]
  __shared__ float red[32];
  const AttnCombineTile tile = tiles[blockIdx.x];
  const int r = blockIdx.z;
  const AttnSeq seq = seqs[tile.seq];
  const int kvh = blockIdx.y;
  const int group = q_heads / kv_heads;
  const int vr = tile.v_begin + r;
  if (r >= tile.rows || vr >= seq.num_tokens * group) return;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = blockDim.x / 32;
  auto lse_at = [&](int s) {
    return partial_lse[(static_cast<int64_t>(tile.partial_row) + s * tile.rows + r) * kv_heads + kvh];
  };
  float m = -INFINITY;
  for (int s = tid; s < tile.num_splits; s += blockDim.x) m = fmaxf(m, lse_at(s));
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = red[0];
  for (int i = 1; i < warps; ++i) m = fmaxf(m, red[i]);
  __syncthreads();
  float den = 0.0f;
  for (int s = tid; s < tile.num_splits; s += blockDim.x) {
    const float lse = lse_at(s);
    const float w = (lse == -INFINITY || m == -INFINITY) ? 0.0f : __expf(lse - m);
    weights[s] = w;
    den += w;
  }
  for (int off = 16; off > 0; off /= 2) den += __shfl_xor_sync(0xffffffffu, den, off);
  if (lane == 0) red[warp] = den;
  __syncthreads();
  den = 0.0f;
  for (int i = 0; i < warps; ++i) den += red[i];
  const int token = vr / group, head = kvh * group + vr % group;
  float* o = out + ((static_cast<int64_t>(seq.first_row) + token) * q_heads + head) * head_dim;
  const int64_t stride = static_cast<int64_t>(tile.rows) * kv_heads * head_dim;
  const float* p = partial_o + ((static_cast<int64_t>(tile.partial_row) + r) * kv_heads + kvh) * head_dim;
  // Threads split as (split group, float4 column): many independent loads
  // in flight, then a shared-memory sum over the split groups.
  const int vec_cols = head_dim / 4;
  const int groups = blockDim.x / vec_cols;
  const int col = tid % vec_cols, sg = tid / vec_cols;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (sg < groups) {
#pragma unroll 4
    for (int s = sg; s < tile.num_splits; s += groups) {
      const float w = weights[s];
      const float4 v = *reinterpret_cast<const float4*>(p + s * stride + col * 4);
      acc.x += w * v.x;
      acc.y += w * v.y;
      acc.z += w * v.z;
      acc.w += w * v.w;
    }
  }
  __syncthreads();  // weights no longer needed: reuse them for the sums
  float4* sums = reinterpret_cast<float4*>(weights);
  if (sg < groups) sums[sg * vec_cols + col] = acc;
  __syncthreads();
  if (sg == 0) {
    for (int i = 1; i < groups; ++i) {
      const float4 v = sums[i * vec_cols + col];
      acc.x += v.x;
      acc.y += v.y;
      acc.z += v.z;
      acc.w += v.w;
    }
    const float inv = den > 0.0f ? 1.0f / den : 0.0f;
    *reinterpret_cast<float4*>(o + col * 4) = make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
  }
}

template <int R, int D>
cudaError_t LaunchTiles(const AttentionPlan& plan, const std::vector<AttnItem>& items,
                        int64_t items_offset, const Offsets& o, const char* ws, const float* q,
                        const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache, float* out,
                        cudaStream_t stream) {
  if (items.empty()) return cudaSuccess;
  using L = Smem<R, D>;
  static bool configured = false;  // per template instance and process
  if (!configured) {
    cudaError_t err = cudaFuncSetAttribute(AttentionKernel<R, D>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, L::bytes);
    if (err != cudaSuccess) return err;
    configured = true;
  }
  const AttentionDims& d = plan.dims;
  dim3 grid(static_cast<unsigned>(items.size()), static_cast<unsigned>(d.kv_heads));
  AttentionKernel<R, D><<<grid, kThreads, L::bytes, stream>>>(
      reinterpret_cast<const AttnSeq*>(ws + o.seqs), reinterpret_cast<const int32_t*>(ws + o.tables),
      reinterpret_cast<const AttnItem*>(ws + items_offset), d.q_heads, d.kv_heads, d.block_size,
      1.0f / sqrtf(static_cast<float>(D)), q, k_cache, v_cache, out,
      const_cast<float*>(reinterpret_cast<const float*>(ws + o.partial_o)),
      const_cast<float*>(reinterpret_cast<const float*>(ws + o.partial_lse)));
  return cudaGetLastError();
}

template <int D>
cudaError_t LaunchForHeadDim(const AttentionPlan& plan, const void* workspace, const float* q,
                             const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache, float* out,
                             cudaStream_t stream) {
  const Offsets o = ComputeOffsets(plan);
  const char* ws = static_cast<const char*>(workspace);
  cudaError_t err = cudaSuccess;
  if (!plan.items16.empty()) {
    const AttentionDims& d = plan.dims;
    dim3 grid(static_cast<unsigned>(plan.items16.size()), static_cast<unsigned>(d.kv_heads));
    DecodeKernel<D><<<grid, kThreads, 0, stream>>>(
        reinterpret_cast<const AttnSeq*>(ws + o.seqs), reinterpret_cast<const int32_t*>(ws + o.tables),
        reinterpret_cast<const AttnItem*>(ws + o.items16), d.q_heads, d.kv_heads, d.block_size,
        1.0f / sqrtf(static_cast<float>(D)), q, k_cache, v_cache, out,
        const_cast<float*>(reinterpret_cast<const float*>(ws + o.partial_o)),
        const_cast<float*>(reinterpret_cast<const float*>(ws + o.partial_lse)));
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  err = LaunchTiles<64, D>(plan, plan.items64, o.items64, o, ws, q, k_cache, v_cache, out, stream);
  if (err != cudaSuccess) return err;
  if (plan.combine.empty()) return cudaSuccess;
  // Weights of every split, later reused for the per-group float4 sums.
  constexpr int kCombineThreads = 256;
  const size_t smem = sizeof(float) * std::max<int64_t>(plan.combine_max_splits, 4 * kCombineThreads);
  if (smem > 48 * 1024) return cudaErrorInvalidValue;  // over 12K splits: never planned
  dim3 grid(static_cast<unsigned>(plan.combine.size()), static_cast<unsigned>(plan.dims.kv_heads),
            static_cast<unsigned>(plan.combine_max_rows));
  CombineKernel<<<grid, kCombineThreads, smem, stream>>>(
      reinterpret_cast<const AttnSeq*>(ws + o.seqs),
      reinterpret_cast<const AttnCombineTile*>(ws + o.combine), plan.dims.q_heads,
      plan.dims.kv_heads, plan.dims.head_dim, reinterpret_cast<const float*>(ws + o.partial_o),
      reinterpret_cast<const float*>(ws + o.partial_lse), out);
  return cudaGetLastError();
}

}  // namespace

int64_t AttentionPlan::WorkspaceBytes() const { return ComputeOffsets(*this).end; }

AttentionPlan MakeAttentionPlan(const StepLayout& layout, const AttentionDims& dims,
                                int target_blocks, int min_split_tokens) {
  AttentionPlan plan;
  plan.dims = dims;
  const int group = dims.q_heads / dims.kv_heads;
  struct Tile {
    int seq, v_begin, rows, kv_len;
  };
  std::vector<Tile> tiles;
  int64_t row = 0;
  for (size_t i = 0; i < layout.sequences.size(); ++i) {
    const SequenceChunk& s = layout.sequences[i];
    AttnSeq rec;
    rec.first_row = static_cast<int32_t>(row);
    rec.num_tokens = s.num_tokens;
    rec.cached_tokens = s.cached_tokens;
    rec.table_offset = static_cast<int32_t>(plan.block_tables.size());
    plan.seqs.push_back(rec);
    const int64_t total = static_cast<int64_t>(s.cached_tokens) + s.num_tokens;
    const int64_t blocks = (total + dims.block_size - 1) / dims.block_size;
    plan.block_tables.insert(plan.block_tables.end(), s.block_table.begin(),
                             s.block_table.begin() + blocks);
    const int valid = s.num_tokens * group;
    const int rows = valid <= 16 ? 16 : 64;
    for (int v = 0; v < valid; v += rows) {
      const int last_token = std::min(v + rows, valid) - 1;
      tiles.push_back({static_cast<int>(i), v, rows, s.cached_tokens + last_token / group + 1});
    }
    row += s.num_tokens;
  }
  const int64_t base = static_cast<int64_t>(tiles.size()) * dims.kv_heads;
  const int64_t wanted = base > 0 ? std::max<int64_t>(1, (target_blocks + base - 1) / base) : 1;
  for (const Tile& t : tiles) {
    // One tile never takes more than half the target: past that, the
    // combine and the partial outputs cost more than the extra blocks gain.
    int64_t splits = std::min<int64_t>(wanted, (t.kv_len + min_split_tokens - 1) / min_split_tokens);
    splits = std::min<int64_t>(splits, std::max(1, target_blocks / 2));
    splits = std::max<int64_t>(splits, 1);
    int64_t chunk = (t.kv_len + splits - 1) / splits;
    chunk = (chunk + kKeyTile - 1) / kKeyTile * kKeyTile;
    splits = (t.kv_len + chunk - 1) / chunk;
    std::vector<AttnItem>& items = t.rows == 16 ? plan.items16 : plan.items64;
    if (splits == 1) {
      items.push_back({t.seq, t.v_begin, 0, t.kv_len, -1});
      continue;
    }
    const int32_t base_row = static_cast<int32_t>(plan.partial_rows);
    for (int64_t sp = 0; sp < splits; ++sp) {
      const int32_t b = static_cast<int32_t>(sp * chunk);
      const int32_t e = static_cast<int32_t>(std::min<int64_t>(t.kv_len, (sp + 1) * chunk));
      items.push_back({t.seq, t.v_begin, b, e, static_cast<int32_t>(base_row + sp * t.rows)});
    }
    plan.partial_rows += splits * t.rows;
    plan.combine.push_back({t.seq, t.v_begin, t.rows, static_cast<int32_t>(splits), base_row});
    plan.combine_max_splits = std::max<int32_t>(plan.combine_max_splits, static_cast<int32_t>(splits));
    plan.combine_max_rows = std::max<int32_t>(plan.combine_max_rows, t.rows);
  }
  return plan;
}

cudaError_t UploadAttentionPlan(AttentionPlan& plan, void* workspace, cudaStream_t stream) {
  const Offsets o = ComputeOffsets(plan);
  std::vector<char>& host = plan.staging;
  host.assign(o.meta_end, 0);
  auto put = [&](int64_t off, const void* src, size_t bytes) {
    if (bytes) std::copy_n(static_cast<const char*>(src), bytes, host.data() + off);
  };
  put(o.seqs, plan.seqs.data(), sizeof(AttnSeq) * plan.seqs.size());
  put(o.tables, plan.block_tables.data(), sizeof(int32_t) * plan.block_tables.size());
  put(o.items16, plan.items16.data(), sizeof(AttnItem) * plan.items16.size());
  put(o.items64, plan.items64.data(), sizeof(AttnItem) * plan.items64.size());
  put(o.combine, plan.combine.data(), sizeof(AttnCombineTile) * plan.combine.size());
  if (host.empty()) return cudaSuccess;
  return cudaMemcpyAsync(workspace, host.data(), host.size(), cudaMemcpyHostToDevice, stream);
}

cudaError_t LaunchAttention(const AttentionPlan& plan, const void* workspace, const float* q,
                            const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache,
                            float* out, cudaStream_t stream) {
  if (plan.dims.kv_heads <= 0 || plan.dims.q_heads % plan.dims.kv_heads != 0) {
    return cudaErrorInvalidValue;
  }
  switch (plan.dims.head_dim) {
    case 64:
      return LaunchForHeadDim<64>(plan, workspace, q, k_cache, v_cache, out, stream);
    case 128:
      return LaunchForHeadDim<128>(plan, workspace, q, k_cache, v_cache, out, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace strata::kernels::cuda
