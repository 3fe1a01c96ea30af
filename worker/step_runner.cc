#include "worker/step_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/reference/sampling.h"
#include "base/status_macros.h"

namespace strata::worker {

using transport::MessageType;

RowLogSoftmax LogSoftmaxOf(const float* row, int64_t n) {
  RowLogSoftmax r;
  r.max = *std::max_element(row, row + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(row[i] - r.max));
  r.log_sum = static_cast<float>(std::log(sum));
  return r;
}

absl::StatusOr<StepOutput> StepRunner::Run(const transport::Message& m) {
  const StageSpec& spec = executor_->spec();
  const model::LlamaConfig& c = executor_->config();
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
  const int64_t h = c.hidden_size;

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
    const uint64_t want_bytes = static_cast<uint64_t>(out.rows * h) * sizeof(float);
    if (m.header.payload_bytes != want_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("activations of ", m.header.payload_bytes, " bytes, expected ",
                                                     out.rows, " rows x ", h, " floats"));
    }
    const uint8_t* p = m.payload();
    if (reinterpret_cast<uintptr_t>(p) % alignof(float) != 0) {  // never with EncodePlan's padding
      aligned_.resize(out.rows * h);
      std::memcpy(aligned_.data(), p, want_bytes);
      hidden = absl::MakeConstSpan(aligned_);
    } else {
      hidden = absl::Span<const float>(reinterpret_cast<const float*>(p), out.rows * h);
    }
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
    // m.header.plan_bytes is a multiple of 8 (EncodePlan pads), so the
    // floats after it are aligned.
    out.activations.resize(m.header.plan_bytes + static_cast<size_t>(out.rows * h) * sizeof(float));
    std::memcpy(out.activations.data(), m.plan(), m.header.plan_bytes);
    float* hidden_out = reinterpret_cast<float*>(out.activations.data() + m.header.plan_bytes);
    STRATA_RETURN_IF_ERROR(executor_->Forward(layout, plan.token_ids, hidden, logit_rows, cache_, nullptr, hidden_out));
    return out;
  }
  STRATA_RETURN_IF_ERROR(executor_->Forward(layout, plan.token_ids, hidden, logit_rows, cache_, &logits_));
  if (spec.tp_rank != 0) return out;  // rank 0 of the last stage answers  // rank 0 of the last stage answers

  // The last stage: sample and score.
  const int64_t vocab = c.vocab_size;
  out.result.step_id = plan.step_id;
  int64_t row = 0;
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    const transport::PlanSequence& s = plan.sequences[i];
    transport::SequenceResult r;
    r.seq_id = s.seq_id;
    if (first_logit[i] >= 0 || s.sample) {
      // Logits row of new token t is first_logit + t (valid for t = last
      // when only the last row was gathered).
      auto row_of = [&](int32_t t) { return logits_.data() + (first_logit[i] + t) * vocab; };
      if (s.sample) {
        const float* last = row_of(s.num_tokens - 1);
        kernels::SamplingParams p;
        p.temperature = s.sampling.temperature;
        p.top_k = s.sampling.top_k;
        p.top_p = s.sampling.top_p;
        p.seed = s.sampling.seed;
        p.step = s.sampling.step;
        r.token = kernels::reference::Sample(last, vocab, p);
        if (s.logprobs >= 0) {
          const RowLogSoftmax ls = LogSoftmaxOf(last, vocab);
          r.logprob = ls.At(last[r.token]);
          if (s.logprobs > 0) {
            std::vector<int32_t> ids(vocab);
            for (int32_t v = 0; v < vocab; ++v) ids[v] = v;
            const int64_t n = std::min<int64_t>(s.logprobs, vocab);
            std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
              return last[a] > last[b] || (last[a] == last[b] && a < b);
            });
            for (int64_t k = 0; k < n; ++k) r.top.push_back({ids[k], ls.At(last[ids[k]])});
          }
        }
        if (plan.return_logits) r.logits.assign(last, last + vocab);
      }
      if (s.prompt_logprobs) {
        for (int32_t t = 0; t < s.num_tokens; ++t) {
          const int32_t target = t + 1 < s.num_tokens ? plan.token_ids[row + t + 1] : s.next_token_id;
          if (target < 0) break;
          if (target >= vocab) {
            return absl::InvalidArgumentError(absl::StrCat("next_token_id ", target, " is outside the vocabulary"));
          }
          const float* lr = row_of(t);
          r.prompt_logprobs.push_back(LogSoftmaxOf(lr, vocab).At(lr[target]));
        }
      }
    }
    out.result.sequences.push_back(std::move(r));
    row += s.num_tokens;
  }
  return out;
}

}  // namespace strata::worker
