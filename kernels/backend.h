// The seam between the model's math and the hardware. A stage executor calls
// these ops in order for each step; each backend (reference, cpu, cuda)
// implements all of them. Activation pointers (float*) point into Buffers the
// same backend allocated: host memory for CPU backends, device memory for
// CUDA. Token ids and step layouts are host data; a backend uploads what it
// needs in BeginStep.
//
// Threading: a Backend is used by one thread at a time (its own ops may use
// many threads internally).
#ifndef STRATA_KERNELS_BACKEND_H_
#define STRATA_KERNELS_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/sampling_params.h"
#include "kernels/step_layout.h"
#include "model/safetensors.h"

namespace strata::kernels {

// A weight in the backend's storage format: a matrix [rows, cols] as in the
// checkpoint ([out_features, in_features]), or a vector (rows == 1).
class Weight {
 public:
  Weight(int64_t rows, int64_t cols) : rows_(rows), cols_(cols) {}
  virtual ~Weight() = default;
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }

 private:
  int64_t rows_;
  int64_t cols_;
};

// Activation memory owned by the backend.
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual float* data() = 0;
  virtual int64_t size() const = 0;  // floats
};

// One stage's paged KV cache: per layer, K and V of
// [num_blocks, block_size, num_kv_heads, head_dim].
class KvCache {
 public:
  explicit KvCache(const KvCacheShape& shape) : shape_(shape) {}
  virtual ~KvCache() = default;
  const KvCacheShape& shape() const { return shape_; }

 private:
  KvCacheShape shape_;
};

// Rows [row_begin, row_end) and columns [col_begin, col_end) of a checkpoint
// tensor: how a tensor-parallel rank takes its slice. The default is whole.
struct WeightSlice {
  int64_t row_begin = 0;
  int64_t row_end = -1;  // -1: all rows
  int64_t col_begin = 0;
  int64_t col_end = -1;  // -1: all columns
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Name() const = 0;
  // Bytes one K or V value takes in this backend's KV cache (4 for f32, 2
  // for bf16), for sizing a cache to a memory budget.
  virtual int64_t KvBytesPerValue() const = 0;
  // The device stream collectives must run on; nullptr for host backends.
  // On the CUDA backend it is its cudaStream_t, owned by the backend.
  virtual void* NativeStream() { return nullptr; }

  // Copies (and converts) a checkpoint tensor, or a slice of it, into
  // backend storage. 1-D tensors load as one row.
  virtual absl::StatusOr<std::unique_ptr<Weight>> LoadWeight(const model::TensorView& tensor,
                                                             const WeightSlice& slice) = 0;
  virtual absl::StatusOr<std::unique_ptr<Buffer>> AllocateBuffer(int64_t floats) = 0;
  virtual absl::StatusOr<std::unique_ptr<KvCache>> AllocateKvCache(const KvCacheShape& shape) = 0;
  virtual absl::Status CopyToHost(const float* src, int64_t floats, float* host_dst) = 0;
  virtual absl::Status CopyFromHost(const float* host_src, int64_t floats, float* dst) = 0;

  // Makes `layout` the current step. The caller validated it against the
  // cache (ValidateStepLayout); it must stay alive until the next BeginStep.
  virtual absl::Status BeginStep(const StepLayout& layout) = 0;

  // out: [n, table.cols] = rows `ids` of table; ids: host [n]. An id outside
  // [0, table.rows) gives a zero row: that is how a vocab-parallel rank,
  // holding rows [r V/T, (r+1) V/T) of the table, embeds the ids it does not
  // own before the all-reduce.
  virtual void Embed(const Weight& table, const int32_t* ids, int64_t n, float* out) = 0;
  // out = x / sqrt(mean(x^2) + eps) * w, per row. x, out: [rows, w.cols].
  virtual void RmsNorm(const float* x, const Weight& w, float eps, int64_t rows, float* out) = 0;
  // y: [rows, w.rows] = x: [rows, w.cols] times w transposed.
  virtual void MatMul(const float* x, int64_t rows, const Weight& w, float* y) = 0;
  // ys[i] = x times ws[i] transposed, for weights that share one input (q/k/v,
  // gate/up); every ws[i] has x's column count. Backends may do it in one
  // pass over x; the result equals separate MatMul calls.
  virtual void MatMulShared(const float* x, int64_t rows, const std::vector<const Weight*>& ws,
                            const std::vector<float*>& ys) {
    for (size_t i = 0; i < ws.size(); ++i) MatMul(x, rows, *ws[i], ys[i]);
  }
  // Rotates x: [step rows, heads, head_dim] in place at each row's position
  // (from the current step), rotate_half convention; inv_freq: [head_dim / 2].
  virtual void Rope(float* x, int64_t heads, int64_t head_dim, const std::vector<float>& inv_freq) = 0;
  // Stores k, v: [step rows, kv_heads, head_dim] at each row's cache index.
  virtual void WriteKv(KvCache& cache, int64_t layer, const float* k, const float* v) = 0;
  // Causal GQA attention of q: [step rows, q_heads, head_dim] over the cache
  // (which already holds this step's K/V). Query head h reads KV head
  // h / (q_heads / kv_heads). out: [step rows, q_heads, head_dim].
  // Invariant: q_heads % kv_heads == 0.
  virtual void Attention(const KvCache& cache, int64_t layer, const float* q, int64_t q_heads,
                         float* out) = 0;
  // out = silu(gate) * up; all [rows, width].
  virtual void SwiGlu(const float* gate, const float* up, int64_t rows, int64_t width, float* out) = 0;
  // x += y, elementwise over n floats.
  virtual void Add(float* x, const float* y, int64_t n) = 0;
  // out: [n, cols] = rows `row_ids` (host, in [0, rows of x)) of x: [?, cols].
  virtual void GatherRows(const float* x, int64_t cols, const int64_t* row_ids, int64_t n,
                          float* out) = 0;
  // Samples and scores logits rows: row i of logits: [requests.size(),
  // vocab] (backend memory) as requests[i] asks, into results[i] (host;
  // results.size() == requests.size()). Tokens follow the plain sampler of
  // kernels/reference/sampling.h. Only the results reach the host (the
  // caller copies logits with CopyToHost when it wants them whole). Returns
  // when the results are written, with any error queued work reported.
  // INVALID_ARGUMENT (ValidateSampleRequests) for a bad request; nothing
  // runs then.
  virtual absl::Status Sample(const float* logits, int64_t vocab, absl::Span<const SampleRequest> requests,
                              absl::Span<SampleResult> results) = 0;
  // Waits for queued work (a no-op on synchronous backends) and reports any
  // asynchronous error.
  virtual absl::Status Synchronize() = 0;
};

// The checks every Backend::Sample makes first: vocab >= 1, as many results
// as requests, a target in [-1, vocab), and for rows that sample, logprobs
// in [-1, kMaxTopLogprobs], a finite temperature >= 0, top_k >= 0 and top_p
// in (0, 1]. INVALID_ARGUMENT naming the row and the field.
absl::Status ValidateSampleRequests(int64_t vocab, absl::Span<const SampleRequest> requests,
                                    absl::Span<const SampleResult> results);

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_BACKEND_H_
