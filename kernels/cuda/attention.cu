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
  for (int kt = item.kv_begin; kt < item.kv_end; kt += kKeyTile) {
    // K and V rows of this key tile, gathered through the block table.
    for (int idx = tid; idx < kKeyTile * kChunks; idx += kThreads) {
      const int row = idx / kChunks, c = idx % kChunks;
      const int j = kt + row;
      uint4 kval = make_uint4(0, 0, 0, 0), vval = make_uint4(0, 0, 0, 0);
      if (j < item.kv_end) {
        const int64_t slot = static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
        const int64_t off = (slot * kv_heads + kvh) * D + c * 8;
        kval = __ldg(reinterpret_cast<const uint4*>(k_cache + off));
        vval = __ldg(reinterpret_cast<const uint4*>(v_cache + off));
      }
      *reinterpret_cast<uint4*>(Ks + row * L::kQs + c * 8) = kval;
      *reinterpret_cast<uint4*>(Vs + row * L::kQs + c * 8) = vval;
    }
    __syncthreads();

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

// Merges the splits of one tile (blockIdx.x) for one KV head (blockIdx.y).
__global__ void CombineKernel(const AttnSeq* __restrict__ seqs,
                              const AttnCombineTile* __restrict__ tiles, int32_t q_heads,
                              int32_t kv_heads, int32_t head_dim,
                              const float* __restrict__ partial_o,
                              const float* __restrict__ partial_lse, float* __restrict__ out) {
  const AttnCombineTile tile = tiles[blockIdx.x];
  const AttnSeq seq = seqs[tile.seq];
  const int kvh = blockIdx.y;
  const int group = q_heads / kv_heads;
  const int valid_rows = seq.num_tokens * group;
  for (int idx = threadIdx.x; idx < tile.rows * head_dim; idx += blockDim.x) {
    const int r = idx / head_dim, d = idx % head_dim;
    const int vr = tile.v_begin + r;
    if (vr >= valid_rows) continue;
    float m = -INFINITY;
    for (int s = 0; s < tile.num_splits; ++s) {
      const int64_t pr = static_cast<int64_t>(tile.partial_row) + s * tile.rows + r;
      m = fmaxf(m, partial_lse[pr * kv_heads + kvh]);
    }
    float num = 0.0f, den = 0.0f;
    if (m != -INFINITY) {
      for (int s = 0; s < tile.num_splits; ++s) {
        const int64_t pr = static_cast<int64_t>(tile.partial_row) + s * tile.rows + r;
        const float lse = partial_lse[pr * kv_heads + kvh];
        if (lse == -INFINITY) continue;
        const float w = __expf(lse - m);
        num += w * partial_o[(pr * kv_heads + kvh) * head_dim + d];
        den += w;
      }
    }
    const int token = vr / group, head = kvh * group + vr % group;
    out[((static_cast<int64_t>(seq.first_row) + token) * q_heads + head) * head_dim + d] =
        den > 0.0f ? num / den : 0.0f;
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
  cudaError_t err = LaunchTiles<16, D>(plan, plan.items16, o.items16, o, ws, q, k_cache, v_cache,
                                       out, stream);
  if (err != cudaSuccess) return err;
  err = LaunchTiles<64, D>(plan, plan.items64, o.items64, o, ws, q, k_cache, v_cache, out, stream);
  if (err != cudaSuccess) return err;
  if (plan.combine.empty()) return cudaSuccess;
  dim3 grid(static_cast<unsigned>(plan.combine.size()), static_cast<unsigned>(plan.dims.kv_heads));
  CombineKernel<<<grid, 256, 0, stream>>>(
      reinterpret_cast<const AttnSeq*>(ws + o.seqs),
      reinterpret_cast<const AttnCombineTile*>(ws + o.combine), plan.dims.q_heads,
      plan.dims.kv_heads, plan.dims.head_dim, reinterpret_cast<const float*>(ws + o.partial_o),
      reinterpret_cast<const float*>(ws + o.partial_lse), out);
  return cudaGetLastError();
}

}  // namespace

int64_t AttentionPlan::MetadataBytes() const { return ComputeOffsets(*this).meta_end; }
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
  plan.step_rows = row;
  const int64_t base = static_cast<int64_t>(tiles.size()) * dims.kv_heads;
  const int64_t wanted = base > 0 ? std::max<int64_t>(1, (target_blocks + base - 1) / base) : 1;
  for (const Tile& t : tiles) {
    int64_t splits = std::min<int64_t>(wanted, (t.kv_len + min_split_tokens - 1) / min_split_tokens);
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
