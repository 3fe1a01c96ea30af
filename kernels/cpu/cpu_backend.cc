#include "kernels/cpu/cpu_backend.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/amx_attention.h"
#include "kernels/cpu/amx_matmul.h"
#include "kernels/cpu/cpu_storage.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/lanes.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/vector_attention.h"
#include "kernels/reference/ops.h"
#include "kernels/reference/reference_backend.h"
#include "model/rope.h"
#include "base/status_macros.h"

namespace strata::kernels::cpu {
namespace {

const CpuWeight& W(const Weight& w) { return static_cast<const CpuWeight&>(w); }

// Sums keep 16 independent lanes and end with TreeSum<16>: they vectorize
// without reassociation and give the same bits on every ISA clone.
#define STRATA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

STRATA_CLONES float SumSquares(const float* x, int64_t n) {
  float lanes[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) lanes[l] += x[i + l] * x[i + l];
  for (int l = 0; i + l < n; ++l) lanes[l] += x[i + l] * x[i + l];
  return TreeSum<16>(lanes);
}

}  // namespace

CpuBackend::CpuBackend(const CpuBackendOptions& options)
    : options_(options), pool_(std::max(1, options.threads)) {
  if (!IsaSupported(options_.isa)) options_.isa = BestIsa();
}

std::string CpuBackend::Name() const { return absl::StrCat("cpu-", IsaName(options_.isa)); }

absl::StatusOr<std::unique_ptr<Weight>> CpuBackend::LoadWeight(const model::TensorView& tensor,
                                                               const WeightSlice& slice) {
  STRATA_ASSIGN_OR_RETURN(WeightSlice s, ResolveSlice(tensor, slice));
  const int64_t cols = tensor.shape.back();
  const int64_t rows_out = s.row_end - s.row_begin, cols_out = s.col_end - s.col_begin;
  const bool matrix = tensor.shape.size() == 2;
  const bool bf16 = matrix && tensor.dtype == model::DType::kBF16;
  auto w = std::make_unique<CpuWeight>(rows_out, cols_out, bf16, matrix, options_.isa == Isa::kAmx);
  if (!w->Allocate()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory for weight ", tensor.name, " (", rows_out, " x ", cols_out, ")"));
  }
  const int64_t esize = model::DTypeSize(tensor.dtype);
  std::vector<uint16_t> row_b(bf16 ? cols_out : 0);
  std::vector<float> row_f(bf16 ? 0 : cols_out);
  for (int64_t r = s.row_begin; r < s.row_end; ++r) {
    const uint8_t* src = tensor.data + (r * cols + s.col_begin) * esize;
    const int64_t out_row = r - s.row_begin;
    if (bf16) {
      std::memcpy(row_b.data(), src, cols_out * 2);
      for (int64_t c = 0; c < cols_out; ++c) w->b[w->Index(out_row, c)] = row_b[c];
    } else {
      model::ConvertToFloat(tensor.dtype, src, cols_out, row_f.data());
      for (int64_t c = 0; c < cols_out; ++c) w->f[w->Index(out_row, c)] = row_f[c];
    }
  }
  return std::unique_ptr<Weight>(std::move(w));
}

absl::StatusOr<std::unique_ptr<Buffer>> CpuBackend::AllocateBuffer(int64_t floats) {
  if (floats < 0) return absl::InvalidArgumentError("negative buffer size");
  if (floats > (int64_t{1} << 56)) {
    return absl::ResourceExhaustedError(absl::StrCat("a buffer of ", floats, " floats is past any memory"));
  }
  auto buffer = std::make_unique<CpuBuffer>(floats);
  if (buffer->data() == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory for a buffer of ", floats, " floats"));
  }
  return std::unique_ptr<Buffer>(std::move(buffer));
}

absl::StatusOr<std::unique_ptr<KvCache>> CpuBackend::AllocateKvCache(const KvCacheShape& shape) {
  STRATA_RETURN_IF_ERROR(ValidateKvCacheShape(shape));
  if (shape.head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim ", shape.head_dim, " is over the CPU attention limit of ", kMaxHeadDim));
  }
  if (options_.kv_dtype != model::DType::kBF16 && options_.kv_dtype != model::DType::kF32) {
    return absl::InvalidArgumentError("KV cache dtype must be bf16 or f32");
  }
  const double bytes = 2.0 * model::DTypeSize(options_.kv_dtype) * shape.num_layers *
                       static_cast<double>(shape.FloatsPerLayer());
  if (bytes > 64.0 * (1ull << 30)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache of ", bytes / (1 << 30), " GiB is over the 64 GiB limit"));
  }
  return std::unique_ptr<KvCache>(new CpuKvCache(shape, options_.kv_dtype == model::DType::kBF16));
}

absl::Status CpuBackend::CopyToHost(const float* src, int64_t floats, float* host_dst) {
  std::memcpy(host_dst, src, floats * sizeof(float));
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyFromHost(const float* host_src, int64_t floats, float* dst) {
  std::memcpy(dst, host_src, floats * sizeof(float));
  return absl::OkStatus();
}

absl::Status CpuBackend::BeginStep(const StepLayout& layout) {
  layout_ = &layout;
  positions_ = reference::RowPositions(layout);
  rope_ready_ = false;
  slots_block_size_ = 0;
  tokens_.clear();
  int64_t row = 0;
  for (size_t i = 0; i < layout.sequences.size(); ++i) {
    for (int32_t t = 0; t < layout.sequences[i].num_tokens; ++t, ++row) {
      tokens_.push_back({static_cast<int32_t>(i), t, row});
    }
  }
  return absl::OkStatus();
}

void CpuBackend::EnsureSlots(int64_t block_size) {
  if (slots_block_size_ == block_size) return;
  slots_.resize(layout_->sequences.size());
  for (size_t i = 0; i < layout_->sequences.size(); ++i) {
    const SequenceChunk& s = layout_->sequences[i];
    std::vector<int64_t>& slots = slots_[i];
    slots.resize(static_cast<size_t>(s.cached_tokens) + s.num_tokens);
    for (size_t j = 0; j < slots.size(); ++j) {
      slots[j] = static_cast<int64_t>(s.block_table[j / block_size]) * block_size + j % block_size;
    }
  }
  slots_block_size_ = block_size;
}

void CpuBackend::Embed(const Weight& table, const int32_t* ids, int64_t n, float* out) {
  const CpuWeight& t = W(table);
  const int64_t cols = t.cols();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = ids[i];
    float* o = out + i * cols;
    if (row < 0 || row >= t.rows()) {  // a vocab-parallel rank's foreign id
      std::fill(o, o + cols, 0.0f);
      continue;
    }
    if (t.amx) {  // rows are bf16 pairs 64 bytes apart: element by element
      for (int64_t c = 0; c < cols; ++c) o[c] = model::BF16ToFloat(t.b[t.Index(row, c)]);
      continue;
    }
    // Packed rows are contiguous in chunks of kPackCols columns.
    for (int64_t c = 0; c < cols; c += kPackCols) {
      const int64_t len = std::min<int64_t>(kPackCols, cols - c);
      if (t.is_bf16) {
        model::ConvertToFloat(model::DType::kBF16, t.b.data() + t.Index(row, c), len, o + c);
      } else {
        std::memcpy(o + c, t.f.data() + t.Index(row, c), len * sizeof(float));
      }
    }
  }
}

void CpuBackend::RmsNorm(const float* x, const Weight& w, float eps, int64_t rows, float* out) {
  const int64_t dim = w.cols();
  const float* wv = W(w).f.data();  // vectors are f32
  pool_.ParallelFor(rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * dim;
      const float inv = 1.0f / std::sqrt(SumSquares(xr, dim) / static_cast<float>(dim) + eps);
      float* o = out + r * dim;
      for (int64_t i = 0; i < dim; ++i) o[i] = wv[i] * (xr[i] * inv);
    }
  });
}

void CpuBackend::MatMul(const float* x, int64_t rows, const Weight& w, float* y) {
  MatMulShared(x, rows, {&w}, {y});
}

void CpuBackend::MatMulShared(const float* x, int64_t rows, const std::vector<const Weight*>& ws,
                              const std::vector<float*>& ys) {
  if (rows == 0) return;
  // The bf16 copy of x that the AVX-512 BF16 and AMX kernels read, made
  // once for every weight that shares x (for AMX in its tile layout).
  const uint16_t* xb = nullptr;
  for (const Weight* w : ws) {
    const Isa isa = EffectiveIsa(options_.isa, W(*w).is_bf16);
    if (!xb && isa == Isa::kAvx512Bf16) {
      xb = Xb(rows * w->cols());
      ToBf16(x, rows * w->cols(), Xb(rows * w->cols()));
    } else if (!xb && isa == Isa::kAmx) {
      uint16_t* out = Xb(AmxActRows(rows) * AmxActCols(w->cols()));
      xb = out;
      const int64_t k = w->cols();
      pool_.ParallelFor(AmxActRows(rows) / kAmxTileRows, 1,
                        [&](int64_t b, int64_t e) { ToBf16TileRows(x, rows, k, b, e, out); });
    }
  }
  for (size_t i = 0; i < ws.size(); ++i) {
    const CpuWeight& wt = W(*ws[i]);
    MatMulArgs a;
    a.x = x;
    a.xb = xb;
    a.rows = rows;
    a.k = wt.cols();
    a.n = wt.rows();
    a.y = ys[i];
    if (wt.is_bf16) {
      a.w_bf16 = wt.b.data();
    } else {
      a.w_f32 = wt.f.data();
    }
    const Isa isa = options_.isa;
    // Blocks of 64 outputs (a multiple of the 4-row packing) per task.
    pool_.ParallelFor((a.n + 63) / 64, 1, [&](int64_t b, int64_t e) {
      MatMulRange(isa, a, b * 64, std::min(a.n, e * 64));
    });
  }
}

uint16_t* CpuBackend::Xb(int64_t n) {
  // A few MiB at most (activations of one step); out of memory here is
  // fatal, as it would be for a std::vector.
  if (xb_.size() < n && !xb_.Allocate(std::max<int64_t>(n, int64_t{1} << 20))) {
    std::fprintf(stderr, "cpu backend: out of memory for %lld bf16 activations\n", static_cast<long long>(n));
    std::abort();
  }
  return xb_.data();
}

void CpuBackend::Rope(float* x, int64_t heads, int64_t head_dim, const std::vector<float>& inv_freq) {
  const int64_t rows = static_cast<int64_t>(positions_.size());
  const int64_t half = head_dim / 2;
  if (!rope_ready_ || rope_freq_ != inv_freq) {
    rope_freq_ = inv_freq;
    rope_cos_.resize(rows * half);
    rope_sin_.resize(rows * half);
    for (int64_t r = 0; r < rows; ++r) {
      model::RopeCosSin(inv_freq, positions_[r], rope_cos_.data() + r * half, rope_sin_.data() + r * half);
    }
    rope_ready_ = true;
  }
  pool_.ParallelFor(rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        model::ApplyRotaryToHead(x + (r * heads + h) * head_dim, head_dim, rope_cos_.data() + r * half,
                                 rope_sin_.data() + r * half);
      }
    }
  });
}

void CpuBackend::WriteKv(KvCache& cache, int64_t layer, const float* k, const float* v) {
  auto& c = static_cast<CpuKvCache&>(cache);
  const KvCacheShape& s = cache.shape();
  const int64_t width = s.num_kv_heads * s.head_dim;
  EnsureSlots(s.block_size);
  for (const TokenRef& tok : tokens_) {
    const int64_t off = slots_[tok.seq][layout_->sequences[tok.seq].cached_tokens + tok.token] * width;
    const float* kr = k + tok.row * width;
    const float* vr = v + tok.row * width;
    if (c.bf16()) {
      ToBf16(kr, width, c.kb(layer) + off);
      ToBf16(vr, width, c.vb(layer) + off);
    } else {
      std::memcpy(c.kf(layer) + off, kr, width * sizeof(float));
      std::memcpy(c.vf(layer) + off, vr, width * sizeof(float));
    }
  }
}


void CpuBackend::Attention(const KvCache& cache, int64_t layer, const float* q, int64_t q_heads,
                           float* out) {
  const auto& c = static_cast<const CpuKvCache&>(cache);
  const KvCacheShape& s = cache.shape();
  // On amx every row of the step goes to tiles (decode tokens too), so a
  // token's output never depends on the size of its chunk.
  if (options_.isa == Isa::kAmx && c.bf16() && AmxAttentionFits(q_heads, s.num_kv_heads, s.head_dim)) {
    EnsureSlots(s.block_size);
    AmxAttentionArgs a;
    a.q = q;
    a.q_heads = q_heads;
    a.kv_heads = s.num_kv_heads;
    a.d = s.head_dim;
    a.k = c.kb(layer);
    a.v = c.vb(layer);
    a.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    a.out = out;
    AmxAttentionStep(pool_, *layout_, slots_, a);
    return;
  }
  const int64_t d = s.head_dim, kvh = s.num_kv_heads, group = q_heads / kvh;
  const int64_t width = kvh * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  // The 16-key score path gives the same bits as the portable one
  // (cpu_backend_test checks every ISA against each other).
  const bool avx512 = options_.isa == Isa::kAvx512 || options_.isa == Isa::kAvx512Bf16 || options_.isa == Isa::kAmx;
  EnsureSlots(s.block_size);
  // Tasks: (new token, KV head); a task serves the whole query group of its
  // KV head, reading each K and V row once.
  const int64_t n_tasks = static_cast<int64_t>(tokens_.size()) * kvh;
  pool_.ParallelFor(n_tasks, 1, [&](int64_t b, int64_t e) {
    std::vector<float> scores;
    for (int64_t ti = b; ti < e; ++ti) {
      const TokenRef& task = tokens_[ti / kvh];
      const int64_t h = ti % kvh;
      const SequenceChunk& seq = layout_->sequences[task.seq];
      const int64_t visible = seq.cached_tokens + task.token + 1;
      const int64_t* slots = slots_[task.seq].data();
      const float* qrow = q + (task.row * q_heads + h * group) * d;
      float* o = out + (task.row * q_heads + h * group) * d;
      if (c.bf16()) {
        AttendOneToken(avx512, qrow, group, d, c.kb(layer) + h * d, c.vb(layer) + h * d, slots, width, visible,
                       scale, scores, o);
      } else {
        AttendOneToken(avx512, qrow, group, d, c.kf(layer) + h * d, c.vf(layer) + h * d, slots, width, visible,
                       scale, scores, o);
      }
    }
  });
}

void CpuBackend::SwiGlu(const float* gate, const float* up, int64_t rows, int64_t width, float* out) {
  const bool avx512 = options_.isa == Isa::kAvx512 || options_.isa == Isa::kAvx512Bf16 || options_.isa == Isa::kAmx;
  pool_.ParallelFor(rows, 1, [&](int64_t b, int64_t e) {
    cpu::SwiGlu(avx512, gate + b * width, up + b * width, (e - b) * width, out + b * width);
  });
}

void CpuBackend::Add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void CpuBackend::GatherRows(const float* x, int64_t cols, const int64_t* row_ids, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * cols, x + row_ids[i] * cols, cols * sizeof(float));
}

absl::Status CpuBackend::Sample(const float* logits, int64_t vocab, absl::Span<const SampleRequest> requests,
                                absl::Span<SampleResult> results) {
  return SampleOnHost(pool_, logits, vocab, requests, results);
}

}  // namespace strata::kernels::cpu
