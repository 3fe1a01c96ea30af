#include "worker/step_runner.h"

#include <cstdio>
#include <cstdlib>

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace strata::worker {

using transport::MessageType;

// The hidden states [rows, hidden] f32 that arrived after the plan.
absl::StatusOr<absl::Span<const float>> StepRunner::IncomingHidden(const transport::Message& m, int64_t rows) {
  const int64_t h = executor_->config().hidden_size;
  const uint64_t want_bytes = static_cast<uint64_t>(rows * h) * sizeof(float);
  if (m.header.payload_bytes != want_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("activations of ", m.header.payload_bytes, " bytes, expected ",
                                                   rows, " rows x ", h, " floats"));
  }
  const uint8_t* p = m.payload();
  if (reinterpret_cast<uintptr_t>(p) % alignof(float) != 0) {  // never with EncodePlan's padding
    aligned_.resize(rows * h);
    std::memcpy(aligned_.data(), p, want_bytes);
    return absl::MakeConstSpan(aligned_);
  }
  return absl::Span<const float>(reinterpret_cast<const float*>(p), rows * h);
}

// Runs the stage into out->activations: the plan goes on with a placeholder
// for this stage's timing (filled in by StampTiming, same size); EncodePlan
// pads to 8 bytes, so the floats after it are aligned.
absl::Status StepRunner::ForwardHidden(const kernels::StepLayout& layout, absl::Span<const float> hidden,
                                       const std::vector<int64_t>& logit_rows, StepOutput* out) {
  const int64_t h = executor_->config().hidden_size;
  transport::StepPlan outgoing = out->plan;
  outgoing.timings.push_back({});
  const std::string encoded = transport::EncodePlan(outgoing);
  out->plan_bytes = static_cast<uint32_t>(encoded.size());
  out->activations = activation_buffers_.Take(encoded.size() + static_cast<size_t>(out->rows * h) * sizeof(float));
  std::memcpy(out->activations.data(), encoded.data(), encoded.size());
  float* hidden_out = reinterpret_cast<float*>(out->activations.data() + encoded.size());
  return executor_->Forward(layout, out->plan.token_ids, hidden, logit_rows, cache_, nullptr, hidden_out);
}

absl::StatusOr<StepOutput> StepRunner::Run(const transport::Message& m) {
  const StageSpec& spec = executor_->spec();
  const auto type = static_cast<MessageType>(m.header.type);
  const MessageType want = spec.has_embedding ? MessageType::kStepPlan : MessageType::kActivations;
  if (type != want) {
    return absl::InvalidArgumentError(absl::StrCat("stage expects ", transport::MessageTypeName(want), ", got ",
                                                   transport::MessageTypeName(type)));
  }
  StepOutput out;
  STRATA_ASSIGN_OR_RETURN(out.plan, transport::DecodePlan(m.plan(), m.header.plan_bytes));
  const transport::StepPlan& plan = out.plan;
  if (plan.step_id != m.header.step_id) {
    return absl::InvalidArgumentError(absl::StrCat("header step ", m.header.step_id, " but plan step ", plan.step_id));
  }
  out.plan_bytes = m.header.plan_bytes;
  out.rows = plan.NumRows();
  STRATA_RETURN_IF_ERROR(executor_->SetBoundariesShifted(plan.shift_boundaries));

  kernels::StepLayout layout;
  layout.sequences.reserve(plan.sequences.size());
  std::set<int32_t> blocks;
  for (const transport::PlanSequence& s : plan.sequences) {
    layout.sequences.push_back(kernels::SequenceChunk{s.num_tokens, s.cached_tokens, s.position_offset, s.block_table});
    blocks.insert(s.block_table.begin(), s.block_table.end());
    out.is_prefill = out.is_prefill || s.num_tokens > 1;
  }
  out.kv_blocks_used = static_cast<int64_t>(blocks.size());

  absl::Span<const float> hidden;
  if (!spec.has_embedding) {
    STRATA_ASSIGN_OR_RETURN(hidden, IncomingHidden(m, out.rows));
  }

  // Rows whose logits the last stage needs: each sampling sequence's last
  // row, and every row of a sequence that wants prompt logprobs.
  std::vector<int64_t> logit_rows;
  std::vector<int64_t> first_logit(plan.sequences.size(), -1);
  if (spec.has_lm_head) {
    int64_t row = 0;
    for (size_t i = 0; i < plan.sequences.size(); ++i) {
      const transport::PlanSequence& s = plan.sequences[i];
      if (s.prompt_logprobs) {
        first_logit[i] = static_cast<int64_t>(logit_rows.size());
        for (int32_t t = 0; t < s.num_tokens; ++t) logit_rows.push_back(row + t);
      } else if (s.sample) {
        first_logit[i] = static_cast<int64_t>(logit_rows.size()) - (s.num_tokens - 1);
        logit_rows.push_back(row + s.num_tokens - 1);
      }
      row += s.num_tokens;
    }
  }
  if (!spec.has_lm_head) {
    STRATA_RETURN_IF_ERROR(ForwardHidden(layout, hidden, logit_rows, &out));
    return out;
  }
  // Rank 0 of the last stage answers; the other ranks only take part in
  // the logits' gather (or the greedy draw's).
  const bool answers = spec.tp_rank == 0;
  const int64_t n = static_cast<int64_t>(logit_rows.size());
  // Every rank builds the same requests from the same plan, so every rank
  // takes the same path below.
  STRATA_RETURN_IF_ERROR(BuildRequests(plan, n, first_logit));
  results_.resize(n);  // every row is written by Backend::Sample on either path
  bool greedy = n > 0 && !plan.return_logits;
  for (const kernels::SampleRequest& q : requests_) greedy = greedy && StageExecutor::IsPlainGreedy(q);
  if (greedy) {
    // Only tokens are asked for: with tensor parallelism the vocabulary
    // stays split (no logits gathered to rank 0).
    STRATA_RETURN_IF_ERROR(executor_->ForwardGreedy(layout, plan.token_ids, hidden, logit_rows, cache_, requests_,
                                                    absl::MakeSpan(results_)));
    if (answers) Assemble(first_logit, &out);
    return out;
  }
  STRATA_ASSIGN_OR_RETURN(const float* logits,
                          executor_->ForwardLogits(layout, plan.token_ids, hidden, logit_rows, cache_,
                                                   StageExecutor::LogitsTo::kRankZero));
  if (!answers) return out;
  STRATA_RETURN_IF_ERROR(SampleAndScore(logits, n, &out));
  Assemble(first_logit, &out);
  return out;
}

void StepOutput::StampTiming(const transport::StageTiming& timing) {
  if (activations.empty()) {
    result.timings = plan.timings;
    result.timings.push_back(timing);
    return;
  }
  transport::StepPlan outgoing = plan;
  outgoing.timings.push_back(timing);
  const std::string encoded = transport::EncodePlan(outgoing);
  // Fixed-width fields: the reserved room fits exactly.
  if (encoded.size() != plan_bytes) {
    std::fprintf(stderr, "StampTiming: plan of %zu bytes, %u reserved\n", encoded.size(), plan_bytes);
    std::abort();
  }
  std::memcpy(activations.data(), encoded.data(), encoded.size());
}

absl::Status StepRunner::BuildRequests(const transport::StepPlan& plan, int64_t n,
                                       const std::vector<int64_t>& first_logit) {
  const int64_t vocab = executor_->config().vocab_size;
  // One request per logits row: sampling rows draw (and report logprobs),
  // prompt rows score the token that follows them, up to the first row
  // without one.
  requests_.assign(n, kernels::SampleRequest());
  int64_t row = 0;
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    const transport::PlanSequence& s = plan.sequences[i];
    if (s.prompt_logprobs) {
      for (int32_t t = 0; t < s.num_tokens; ++t) {
        const int32_t target = t + 1 < s.num_tokens ? plan.token_ids[row + t + 1] : s.next_token_id;
        if (target < 0) break;
        if (target >= vocab) {
          return absl::InvalidArgumentError(absl::StrCat("next_token_id ", target, " is outside the vocabulary"));
        }
        requests_[first_logit[i] + t].target = target;
      }
    }
    if (s.sample) {
      kernels::SampleRequest& q = requests_[first_logit[i] + s.num_tokens - 1];
      q.sample = true;
      q.params = {s.sampling.temperature, s.sampling.top_k, s.sampling.top_p, s.sampling.seed, s.sampling.step};
      q.logprobs = s.logprobs;
    }
    row += s.num_tokens;
  }
  return absl::OkStatus();
}

absl::Status StepRunner::SampleAndScore(const float* logits, int64_t n, StepOutput* out) {
  const transport::StepPlan& plan = out->plan;
  const int64_t vocab = executor_->config().vocab_size;
  kernels::Backend* backend = executor_->backend();
  STRATA_RETURN_IF_ERROR(backend->Sample(logits, vocab, requests_, absl::MakeSpan(results_)));
  bool any_sample = false;
  for (const kernels::SampleRequest& q : requests_) any_sample = any_sample || q.sample;
  if (plan.return_logits && any_sample) {
    logits_.resize(n * vocab);
    STRATA_RETURN_IF_ERROR(backend->CopyToHost(logits, n * vocab, logits_.data()));
  }
  return absl::OkStatus();
}

void StepRunner::Assemble(const std::vector<int64_t>& first_logit, StepOutput* out) {
  const transport::StepPlan& plan = out->plan;
  const int64_t vocab = executor_->config().vocab_size;
  out->result.step_id = plan.step_id;
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    const transport::PlanSequence& s = plan.sequences[i];
    transport::SequenceResult r;
    r.seq_id = s.seq_id;
    if (s.sample) {
      const int64_t last = first_logit[i] + s.num_tokens - 1;
      const kernels::SampleResult& got = results_[last];
      r.token = got.token;
      if (s.logprobs >= 0) r.logprob = got.logprob;
      for (int32_t k = 0; k < got.num_top; ++k) r.top.push_back({got.top[k].token, got.top[k].logprob});
      if (plan.return_logits) r.logits.assign(logits_.data() + last * vocab, logits_.data() + (last + 1) * vocab);
    }
    if (s.prompt_logprobs) {
      for (int32_t t = 0; t < s.num_tokens && requests_[first_logit[i] + t].target >= 0; ++t) {
        r.prompt_logprobs.push_back(results_[first_logit[i] + t].target_logprob);
      }
    }
    out->result.sequences.push_back(std::move(r));
  }
}

}  // namespace strata::worker
