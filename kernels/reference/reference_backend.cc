#include "kernels/reference/reference_backend.h"

#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "kernels/reference/ops.h"
#include "kernels/reference/sampling.h"
#include "base/status_macros.h"

namespace strata::kernels {
namespace {

class HostWeight : public Weight {
 public:
  HostWeight(int64_t rows, int64_t cols) : Weight(rows, cols), values(rows * cols) {}
  std::vector<float> values;
};

class HostBuffer : public Buffer {
 public:
  explicit HostBuffer(int64_t n) : values_(n) {}
  float* data() override { return values_.data(); }
  int64_t size() const override { return static_cast<int64_t>(values_.size()); }

 private:
  std::vector<float> values_;
};

class HostKvCache : public KvCache {
 public:
  explicit HostKvCache(const KvCacheShape& shape)
      : KvCache(shape), k(shape.num_layers * shape.FloatsPerLayer()), v(k.size()) {}
  float* K(int64_t layer) { return k.data() + layer * shape().FloatsPerLayer(); }
  float* V(int64_t layer) { return v.data() + layer * shape().FloatsPerLayer(); }
  const float* K(int64_t layer) const { return k.data() + layer * shape().FloatsPerLayer(); }
  const float* V(int64_t layer) const { return v.data() + layer * shape().FloatsPerLayer(); }
  std::vector<float> k, v;
};

const std::vector<float>& Values(const Weight& w) { return static_cast<const HostWeight&>(w).values; }

}  // namespace

absl::StatusOr<WeightSlice> ResolveSlice(const model::TensorView& tensor, const WeightSlice& slice) {
  if (tensor.shape.empty() || tensor.shape.size() > 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name, " has shape ",
                                                   tensor.ShapeString(), "; expected 1-D or 2-D"));
  }
  const int64_t rows = tensor.shape.size() == 2 ? tensor.shape[0] : 1;
  const int64_t cols = tensor.shape.back();
  WeightSlice s = slice;
  if (s.row_end < 0) s.row_end = rows;
  if (s.col_end < 0) s.col_end = cols;
  if (s.row_begin < 0 || s.row_begin >= s.row_end || s.row_end > rows || s.col_begin < 0 ||
      s.col_begin >= s.col_end || s.col_end > cols) {
    return absl::InvalidArgumentError(
        absl::StrCat("slice rows [", s.row_begin, ", ", s.row_end, ") cols [", s.col_begin, ", ",
                     s.col_end, ") does not fit tensor ", tensor.name, " ", tensor.ShapeString()));
  }
  return s;
}

ReferenceBackend::ReferenceBackend(int threads) : pool_(threads) {}

absl::StatusOr<std::unique_ptr<Weight>> ReferenceBackend::LoadWeight(const model::TensorView& tensor,
                                                                     const WeightSlice& slice) {
  STRATA_ASSIGN_OR_RETURN(WeightSlice s, ResolveSlice(tensor, slice));
  const int64_t cols = tensor.shape.back();
  auto w = std::make_unique<HostWeight>(s.row_end - s.row_begin, s.col_end - s.col_begin);
  const int64_t esize = model::DTypeSize(tensor.dtype);
  for (int64_t r = s.row_begin; r < s.row_end; ++r) {
    model::ConvertToFloat(tensor.dtype, tensor.data + (r * cols + s.col_begin) * esize, w->cols(),
                          w->values.data() + (r - s.row_begin) * w->cols());
  }
  return std::unique_ptr<Weight>(std::move(w));
}

absl::StatusOr<std::unique_ptr<Buffer>> ReferenceBackend::AllocateBuffer(int64_t floats) {
  if (floats < 0) return absl::InvalidArgumentError("negative buffer size");
  return std::unique_ptr<Buffer>(new HostBuffer(floats));
}

absl::StatusOr<std::unique_ptr<KvCache>> ReferenceBackend::AllocateKvCache(const KvCacheShape& shape) {
  STRATA_RETURN_IF_ERROR(ValidateKvCacheShape(shape));
  const double bytes = 2.0 * 4 * shape.num_layers * static_cast<double>(shape.FloatsPerLayer());
  if (bytes > 64.0 * (1ull << 30)) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache of ", bytes / (1 << 30),
                                                     " GiB is over the 64 GiB limit"));
  }
  return std::unique_ptr<KvCache>(new HostKvCache(shape));
}

absl::Status ReferenceBackend::CopyToHost(const float* src, int64_t floats, float* host_dst) {
  std::memcpy(host_dst, src, floats * sizeof(float));
  return absl::OkStatus();
}

absl::Status ReferenceBackend::CopyFromHost(const float* host_src, int64_t floats, float* dst) {
  std::memcpy(dst, host_src, floats * sizeof(float));
  return absl::OkStatus();
}

absl::Status ReferenceBackend::BeginStep(const StepLayout& layout) {
  layout_ = &layout;
  positions_ = reference::RowPositions(layout);
  return absl::OkStatus();
}

void ReferenceBackend::Embed(const Weight& table, const int32_t* ids, int64_t n, float* out) {
  reference::Embed(Values(table).data(), table.rows(), table.cols(), ids, n, out);
}

void ReferenceBackend::RmsNorm(const float* x, const Weight& w, float eps, int64_t rows, float* out) {
  reference::RmsNorm(x, Values(w).data(), eps, rows, w.cols(), out);
}

void ReferenceBackend::MatMul(const float* x, int64_t rows, const Weight& w, float* y) {
  const float* wv = Values(w).data();
  pool_.ParallelFor(w.rows(), 16, [&](int64_t begin, int64_t end) {
    reference::MatMul(x, rows, wv, w.cols(), w.rows(), begin, end, y);
  });
}

void ReferenceBackend::Rope(float* x, int64_t heads, int64_t head_dim,
                            const std::vector<float>& inv_freq) {
  reference::Rope(x, static_cast<int64_t>(positions_.size()), heads, head_dim, positions_.data(),
                  inv_freq);
}

void ReferenceBackend::WriteKv(KvCache& cache, int64_t layer, const float* k, const float* v) {
  auto& c = static_cast<HostKvCache&>(cache);
  reference::WriteKv(*layout_, c.shape(), k, v, c.K(layer), c.V(layer));
}

void ReferenceBackend::Attention(const KvCache& cache, int64_t layer, const float* q,
                                 int64_t q_heads, float* out) {
  const auto& c = static_cast<const HostKvCache&>(cache);
  reference::Attention(*layout_, c.shape(), c.K(layer), c.V(layer), q, q_heads, out);
}

void ReferenceBackend::SwiGlu(const float* gate, const float* up, int64_t rows, int64_t width,
                              float* out) {
  reference::SwiGlu(gate, up, rows * width, out);
}

void ReferenceBackend::Add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void ReferenceBackend::GatherRows(const float* x, int64_t cols, const int64_t* row_ids, int64_t n,
                                  float* out) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * cols, x + row_ids[i] * cols, cols * sizeof(float));
}

absl::Status ReferenceBackend::Sample(const float* logits, int64_t vocab,
                                      absl::Span<const SampleRequest> requests,
                                      absl::Span<SampleResult> results) {
  return SampleOnHost(pool_, logits, vocab, requests, results);
}

absl::Status SampleOnHost(ThreadPool& pool, const float* logits, int64_t vocab,
                          absl::Span<const SampleRequest> requests, absl::Span<SampleResult> results) {
  STRATA_RETURN_IF_ERROR(ValidateSampleRequests(vocab, requests, results));
  // Each row is independent, so the results do not depend on the threads.
  pool.ParallelFor(static_cast<int64_t>(requests.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) results[i] = reference::SampleRow(logits + i * vocab, vocab, requests[i]);
  });
  return absl::OkStatus();
}

}  // namespace strata::kernels
