// The reference backend: float32 weights and activations in host memory,
// the plain ops of ops.h, MatMul split across a thread pool by output
// feature (so results do not depend on the thread count).
#ifndef STRATA_KERNELS_REFERENCE_REFERENCE_BACKEND_H_
#define STRATA_KERNELS_REFERENCE_REFERENCE_BACKEND_H_

#include <memory>

#include "kernels/backend.h"
#include "kernels/cpu/thread_pool.h"

namespace strata::kernels {

class ReferenceBackend : public Backend {
 public:
  explicit ReferenceBackend(int threads = 1);

  std::string Name() const override { return "reference"; }
  int64_t KvBytesPerValue() const override { return 4; }  // f32
  absl::StatusOr<std::unique_ptr<Weight>> LoadWeight(const model::TensorView& tensor,
                                                     const WeightSlice& slice) override;
  absl::StatusOr<std::unique_ptr<Buffer>> AllocateBuffer(int64_t floats) override;
  absl::StatusOr<std::unique_ptr<KvCache>> AllocateKvCache(const KvCacheShape& shape) override;
  absl::Status CopyToHost(const float* src, int64_t floats, float* host_dst) override;
  absl::Status CopyFromHost(const float* host_src, int64_t floats, float* dst) override;
  absl::Status BeginStep(const StepLayout& layout) override;

  void Embed(const Weight& table, const int32_t* ids, int64_t n, float* out) override;
  void RmsNorm(const float* x, const Weight& w, float eps, int64_t rows, float* out) override;
  void MatMul(const float* x, int64_t rows, const Weight& w, float* y) override;
  void Rope(float* x, int64_t heads, int64_t head_dim, const std::vector<float>& inv_freq) override;
  void WriteKv(KvCache& cache, int64_t layer, const float* k, const float* v) override;
  void Attention(const KvCache& cache, int64_t layer, const float* q, int64_t q_heads,
                 float* out) override;
  void SwiGlu(const float* gate, const float* up, int64_t rows, int64_t width, float* out) override;
  void Add(float* x, const float* y, int64_t n) override;
  void GatherRows(const float* x, int64_t cols, const int64_t* row_ids, int64_t n,
                  float* out) override;
  // Rows in parallel, each by reference::SampleRow.
  absl::Status Sample(const float* logits, int64_t vocab, absl::Span<const SampleRequest> requests,
                      absl::Span<SampleResult> results) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

 private:
  ThreadPool pool_;
  const StepLayout* layout_ = nullptr;
  std::vector<int64_t> positions_;
};

// Backend::Sample on host logits: validates, then runs reference::SampleRow
// on each row, rows spread over `pool`. Shared by the host backends.
absl::Status SampleOnHost(ThreadPool& pool, const float* logits, int64_t vocab,
                          absl::Span<const SampleRequest> requests, absl::Span<SampleResult> results);

// Checks a slice against a tensor's shape and returns it with -1 ends
// resolved. Shared by every backend's LoadWeight.
absl::StatusOr<WeightSlice> ResolveSlice(const model::TensorView& tensor, const WeightSlice& slice);

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_REFERENCE_REFERENCE_BACKEND_H_
