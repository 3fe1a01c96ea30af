// Runs one pipeline stage's layers for a step: the single-process engine is a
// stage that holds every layer, and each worker runs the same code for its
// layer range. The executor owns the stage's weights (in backend storage);
// the caller owns the KV cache and the step layout (the router's block
// tables, or the local engine's).
#ifndef STRATA_WORKER_STAGE_EXECUTOR_H_
#define STRATA_WORKER_STAGE_EXECUTOR_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/checkpoint.h"

namespace strata::worker {

// Layers [first_layer, last_layer) of the model; the first stage also holds
// the embedding, the last the final norm and lm_head.
struct StageSpec {
  int64_t first_layer = 0;
  int64_t last_layer = 0;
  bool has_embedding = true;
  bool has_lm_head = true;

  static StageSpec Whole(const model::LlamaConfig& c) { return {0, c.num_layers, true, true}; }
};

class StageExecutor {
 public:
  // Loads the stage's tensors from `checkpoint` into `backend`, checking each
  // one's shape against the config. `backend` must outlive the executor; the
  // checkpoint may be closed afterwards.
  static absl::StatusOr<std::unique_ptr<StageExecutor>> Load(kernels::Backend* backend,
                                                             const model::Checkpoint& checkpoint,
                                                             const StageSpec& spec);

  const model::LlamaConfig& config() const { return config_; }
  const StageSpec& spec() const { return spec_; }
  uint64_t weight_bytes() const { return weight_bytes_; }  // checkpoint bytes loaded

  // The KV cache shape this stage needs for `num_blocks` blocks.
  kernels::KvCacheShape KvShape(int64_t num_blocks, int64_t block_size) const;

  // Runs one step.
  //   token_ids: [layout rows] when the stage has the embedding (else empty);
  //   hidden_in: [layout rows, hidden] host floats otherwise.
  //   logit_rows: on the last stage, the step rows whose logits to return.
  // Output: the last stage writes logits [logit_rows, vocab] to `out`;
  // other stages write hidden states [layout rows, hidden].
  // Bad layouts, token ids or sizes are INVALID_ARGUMENT; nothing is run.
  absl::Status Forward(const kernels::StepLayout& layout, const std::vector<int32_t>& token_ids,
                       const std::vector<float>& hidden_in, const std::vector<int64_t>& logit_rows,
                       kernels::KvCache* cache, std::vector<float>* out);

 private:
  struct Layer {
    std::unique_ptr<kernels::Weight> input_norm, q, k, v, o, post_norm, gate, up, down;
  };
  struct Scratch {
    std::unique_ptr<kernels::Buffer> x, norm, q, k, v, attn, proj, gate, up, act, gathered,
        gathered_norm, logits;
    int64_t rows = 0;
    int64_t logit_rows = 0;
  };

  StageExecutor(kernels::Backend* backend, const model::LlamaConfig& config, const StageSpec& spec);
  absl::Status EnsureScratch(int64_t rows, int64_t logit_rows);

  kernels::Backend* backend_;
  model::LlamaConfig config_;
  StageSpec spec_;
  std::vector<float> inv_freq_;
  std::unique_ptr<kernels::Weight> embedding_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  Scratch scratch_;
  uint64_t weight_bytes_ = 0;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_STAGE_EXECUTOR_H_
