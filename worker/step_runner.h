// Runs one data-plane step on a worker: decodes the plan that arrived (a
// StepPlan on stage 0, Activations elsewhere), checks it against this
// stage, runs the stage executor over the worker's KV pool, and produces
// what goes on: activations for the next stage, or, on the last stage, the
// StepResult (sampled tokens, logprobs; logits only when the plan asks).
// Sampling and scoring run on the backend (Backend::Sample): only their
// results, and the logits when asked, come to the host.
// Networking is the caller's; this is the part every rank runs identically.
#ifndef STRATA_WORKER_STEP_RUNNER_H_
#define STRATA_WORKER_STEP_RUNNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "transport/buffer_pool.h"
#include "transport/transport.h"
#include "transport/wire.h"
#include "worker/stage_executor.h"

namespace strata::worker {

struct StepOutput {
  transport::StepPlan plan;
  bool is_prefill = false;     // some sequence had more than one new token
  int64_t rows = 0;
  // Not the last stage: the Activations message body, the plan as it
  // arrived with room for this stage's timing, then the hidden states
  // [rows, hidden] f32, written there by the executor (one contiguous
  // buffer, no copy; a buffer handed back with Reuse, not zeroed first).
  transport::MessageBytes activations;
  uint32_t plan_bytes = 0;
  transport::StepResult result;  // the last stage
  int64_t kv_blocks_used = 0;  // distinct blocks the step referenced

  // Records this stage's timing where it travels on: appended to the plan
  // in `activations` (its room was reserved: the size does not change), or,
  // on the last stage, after the upstream timings in `result`.
  void StampTiming(const transport::StageTiming& timing);
};

class StepRunner {
 public:
  // `executor` and `cache` must outlive the runner.
  StepRunner(StageExecutor* executor, kernels::KvCache* cache) : executor_(executor), cache_(cache) {}

  // INVALID_ARGUMENT for a message that does not fit this stage (wrong
  // type, payload size, ids, block tables); nothing runs then.
  absl::StatusOr<StepOutput> Run(const transport::Message& message);
  // Hands back the activations of an earlier step once they are sent: the
  // next step writes into it (its pages mapped already) rather than into a
  // new buffer.
  void Reuse(transport::MessageBytes buffer) { activation_buffers_.Give(std::move(buffer)); }

 private:
  // The last stage, every rank: requests_, one per logits row (the row of
  // sequence i's new token t is first_logit[i] + t). INVALID_ARGUMENT for a
  // next_token_id outside the vocabulary.
  absl::Status BuildRequests(const transport::StepPlan& plan, int64_t n, const std::vector<int64_t>& first_logit);
  // The last stage, rank 0: samples and scores the n logits rows (backend
  // memory, [n, vocab]) with Backend::Sample into results_, and brings the
  // logits to the host when the plan asks for them.
  absl::Status SampleAndScore(const float* logits, int64_t n, StepOutput* out);
  // out->result from results_ (and logits_).
  void Assemble(const std::vector<int64_t>& first_logit, StepOutput* out);

  absl::StatusOr<absl::Span<const float>> IncomingHidden(const transport::Message& m, int64_t rows);
  absl::Status ForwardHidden(const kernels::StepLayout& layout, absl::Span<const float> hidden,
                             const std::vector<int64_t>& logit_rows, StepOutput* out);

  StageExecutor* executor_;
  kernels::KvCache* cache_;
  std::vector<float> logits_;  // host copy, only when the plan asks for logits
  std::vector<float> aligned_;
  // Activations buffers handed back (Reuse), for the next steps: one is in
  // flight while the next step computes, so two are all that is kept.
  transport::BufferPool activation_buffers_{2, size_t{4} << 30};
  std::vector<kernels::SampleRequest> requests_;
  std::vector<kernels::SampleResult> results_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_STEP_RUNNER_H_
