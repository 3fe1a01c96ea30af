// The fast CPU backend: bf16 (or f32) weights as in the checkpoint, f32
// activations, a paged KV cache in bf16 or f32, every op on one shared
// thread pool. Matrix products use the best instruction set present
// (kernels/cpu/matmul.h); the other ops are written so that GCC vectorizes
// them without reordering a sum.
//
// Batch invariance: every output row is reduced in an order fixed by the
// ISA alone, never by the batch, the chunking of a prompt or the thread
// count, so a sequence's logits are bitwise the same alone or under load.
#ifndef STRATA_KERNELS_CPU_CPU_BACKEND_H_
#define STRATA_KERNELS_CPU_CPU_BACKEND_H_

#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/huge_pages.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/thread_pool.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {

struct CpuBackendOptions {
  int threads = 1;
  Isa isa = BestIsa();
  model::DType kv_dtype = model::DType::kBF16;  // kBF16 or kF32
};

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options = {});

  std::string Name() const override;
  int64_t KvBytesPerValue() const override { return options_.kv_dtype == model::DType::kBF16 ? 2 : 4; }
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
  // One bf16 copy of x serves every weight (AVX-512 BF16 path).
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
  // The reference sampler per row (kernels/reference/sampling.h), rows on
  // the pool: the same tokens and log-probabilities as ReferenceBackend.
  absl::Status Sample(const float* logits, int64_t vocab, absl::Span<const SampleRequest> requests,
                      absl::Span<SampleResult> results) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

  Isa isa() const { return options_.isa; }
  int threads() const { return pool_.threads(); }

 private:
  // Cache slot (block * block_size + offset) of every cache index of every
  // sequence in the step, for `block_size`; made once per step.
  void EnsureSlots(int64_t block_size);

  // One new token of the step: its sequence, its index among that
  // sequence's new tokens, its step row.
  struct TokenRef {
    int32_t seq, token;
    int64_t row;
  };

  CpuBackendOptions options_;
  ThreadPool pool_;
  const StepLayout* layout_ = nullptr;
  std::vector<int64_t> positions_;
  std::vector<TokenRef> tokens_;
  std::vector<std::vector<int64_t>> slots_;
  int64_t slots_block_size_ = 0;  // 0: slots_ not made for this step
  // RoPE cos / sin of every step row: [rows][head_dim / 2] each, made on the
  // step's first Rope call for the frequencies it brings.
  std::vector<float> rope_cos_, rope_sin_;
  std::vector<float> rope_freq_;
  bool rope_ready_ = false;
  // bf16 activations for kAvx512Bf16 and kAmx products, grown as needed.
  // 2 MiB-aligned: a tile load of rows that straddle cache lines reads
  // twice the lines (AMX products ran at half speed from a malloc'd copy).
  uint16_t* Xb(int64_t n);
  HugePageArray<uint16_t> xb_;
};

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_CPU_BACKEND_H_
