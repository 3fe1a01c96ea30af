// The CUDA backend: bf16 weights and KV cache in device memory, f32
// activations, GEMMs through cuBLASLt (activations cast to bf16 first),
// attention through the paged split-KV kernel, everything queued on one
// stream. Ops are asynchronous: the first failure is kept and returned by
// Synchronize() (and every later op is skipped), so a step reports errors at
// its end without a sync per op.
#ifndef STRATA_KERNELS_CUDA_CUDA_BACKEND_H_
#define STRATA_KERNELS_CUDA_CUDA_BACKEND_H_

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/gemm.h"
#include "kernels/sampling_params.h"

namespace strata::kernels::cuda {

class CudaBackend : public Backend {
 public:
  // Uses GPU `device` (UNAVAILABLE with the driver's reason when none).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int device = 0);
  ~CudaBackend() override;

  std::string Name() const override { return "cuda"; }
  int64_t KvBytesPerValue() const override { return 2; }  // bf16
  void* NativeStream() override { return stream_; }
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
  void MatMulShared(const float* x, int64_t rows, const std::vector<const Weight*>& ws,
                    const std::vector<float*>& ys) override;
  void Rope(float* x, int64_t heads, int64_t head_dim, const std::vector<float>& inv_freq) override;
  void WriteKv(KvCache& cache, int64_t layer, const float* k, const float* v) override;
  void Attention(const KvCache& cache, int64_t layer, const float* q, int64_t q_heads,
                 float* out) override;
  void SwiGlu(const float* gate, const float* up, int64_t rows, int64_t width, float* out) override;
  void Add(float* x, const float* y, int64_t n) override;
  void GatherRows(const float* x, int64_t cols, const int64_t* row_ids, int64_t n,
                  float* out) override;
  // On the device (LaunchSample, then LaunchScore); only the results come
  // back to the host.
  absl::Status Sample(const float* logits, int64_t vocab, absl::Span<const SampleRequest> requests,
                      absl::Span<SampleResult> results) override;
  absl::Status Synchronize() override;

  cudaStream_t stream() const { return stream_; }
  int sm_count() const { return sm_count_; }

 private:
  CudaBackend() = default;
  // Records the first error; true while no error is pending.
  bool Ok(const absl::Status& s);
  bool Ok(cudaError_t err, const char* what);
  // Grows a device scratch buffer to at least `bytes`.
  absl::Status Reserve(void** ptr, size_t* cap, size_t bytes);

  int device_ = 0;
  int sm_count_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<LtGemm> gemm_;
  absl::Status error_;

  // Step state.
  const StepLayout* layout_ = nullptr;
  int64_t step_rows_ = 0;
  std::vector<int64_t> host_positions_;
  std::vector<int64_t> host_slots_;      // cache row (block * block_size + slot) per step row
  void* step_buf_ = nullptr;             // device: positions_ then slots_
  size_t step_cap_ = 0;
  int64_t* positions_ = nullptr;         // device [step rows]
  int64_t* slots_ = nullptr;             // device [step rows]
  int64_t slots_block_size_ = 0;         // block size slots_ were computed for; 0: none
  AttentionPlan plan_;
  bool plan_ready_ = false;
  void* plan_ws_ = nullptr;
  size_t plan_ws_cap_ = 0;

  // Scratch.
  void* bf16_x_ = nullptr;  // GEMM input cast
  size_t bf16_x_cap_ = 0;
  void* ids_ = nullptr;     // token / row ids uploaded per call
  size_t ids_cap_ = 0;
  std::vector<int32_t> host_token_ids_;  // host staging of those uploads,
  std::vector<int64_t> host_row_ids_;    // alive until the next BeginStep
  std::vector<float> inv_freq_host_;
  float* inv_freq_ = nullptr;
  void* sample_scratch_ = nullptr;
  size_t sample_scratch_cap_ = 0;
};

}  // namespace strata::kernels::cuda

#endif  // STRATA_KERNELS_CUDA_CUDA_BACKEND_H_
