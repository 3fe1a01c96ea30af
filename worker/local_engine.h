// The single-process engine behind `strata run`: one StageExecutor holding
// every layer, a paged KV cache it manages itself, chunked prefill and a
// greedy decode loop. It drives exactly the code a pipeline of workers runs;
// the greedy choice is the backend's Sample, so only the token crosses to the
// host unless the logits are asked for.
#ifndef STRATA_WORKER_LOCAL_ENGINE_H_
#define STRATA_WORKER_LOCAL_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/stage_executor.h"

namespace strata::worker {

struct EngineOptions {
  int64_t block_size = 16;       // tokens per KV block
  int64_t prefill_chunk = 512;   // prompt tokens per step
};

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;
  // RoPE position of the first prompt token (lets tests place a short prompt
  // beyond the original 8192-token context).
  int64_t position_offset = 0;
  bool ignore_eos = false;
  bool return_logits = false;  // keep the logits behind every generated token
};

struct GenerateResult {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // [generated][vocab] when asked
  std::string finish_reason;  // "length" or "stop"
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

class LocalEngine {
 public:
  // `backend` must outlive the engine.
  static absl::StatusOr<std::unique_ptr<LocalEngine>> Create(kernels::Backend* backend,
                                                             const model::Checkpoint& checkpoint,
                                                             const EngineOptions& options);

  const model::LlamaConfig& config() const { return executor_->config(); }
  const StageExecutor& executor() const { return *executor_; }

  // Greedy generation. Validates the request: non-empty prompt, ids inside
  // the vocabulary, 1 <= max_tokens, prompt + max_tokens + offset within the
  // context (INVALID_ARGUMENT naming the field).
  absl::StatusOr<GenerateResult> Generate(const GenerateRequest& request);

 private:
  LocalEngine(kernels::Backend* backend, std::unique_ptr<StageExecutor> executor,
              const EngineOptions& options)
      : backend_(backend), executor_(std::move(executor)), options_(options) {}
  absl::Status EnsureCache(int64_t tokens);
  // The greedy token of `logits` (backend memory, [vocab]) by
  // Backend::Sample, appended to result->tokens; the logits too when
  // `keep_logits`.
  absl::StatusOr<int32_t> NextToken(const float* logits, bool keep_logits, GenerateResult* result);

  kernels::Backend* backend_;
  std::unique_ptr<StageExecutor> executor_;
  EngineOptions options_;
  std::unique_ptr<kernels::KvCache> cache_;
};

// Index of the largest logit; the lowest index wins ties.
int32_t Argmax(const float* logits, int64_t n);

}  // namespace strata::worker

#endif  // STRATA_WORKER_LOCAL_ENGINE_H_
