#include "worker/local_engine.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace strata::worker {

int32_t Argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

absl::StatusOr<std::unique_ptr<LocalEngine>> LocalEngine::Create(kernels::Backend* backend,
                                                                  const model::Checkpoint& checkpoint,
                                                                  const EngineOptions& options) {
  if (options.block_size <= 0 || options.block_size > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("block_size must be in [1, 4096], got ", options.block_size));
  }
  if (options.prefill_chunk <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("prefill_chunk must be positive, got ", options.prefill_chunk));
  }
  STRATA_ASSIGN_OR_RETURN(auto executor,
                          StageExecutor::Load(backend, checkpoint, StageSpec::Whole(checkpoint.config())));
  return std::unique_ptr<LocalEngine>(new LocalEngine(backend, std::move(executor), options));
}

absl::Status LocalEngine::EnsureCache(int64_t tokens) {
  const int64_t blocks = (tokens + options_.block_size - 1) / options_.block_size;
  if (cache_ && cache_->shape().num_blocks >= blocks) return absl::OkStatus();
  cache_.reset();
  STRATA_ASSIGN_OR_RETURN(cache_, backend_->AllocateKvCache(executor_->KvShape(blocks, options_.block_size)));
  return absl::OkStatus();
}

absl::StatusOr<int32_t> LocalEngine::NextToken(const float* logits, bool keep_logits, GenerateResult* result) {
  const int64_t vocab = config().vocab_size;
  kernels::SampleRequest greedy;
  greedy.sample = true;
  kernels::SampleResult next;
  STRATA_RETURN_IF_ERROR(backend_->Sample(logits, vocab, {greedy}, absl::MakeSpan(&next, 1)));
  result->tokens.push_back(next.token);
  if (keep_logits) {
    result->logits.emplace_back(vocab);
    STRATA_RETURN_IF_ERROR(backend_->CopyToHost(logits, vocab, result->logits.back().data()));
  }
  return next.token;
}

absl::StatusOr<GenerateResult> LocalEngine::Generate(const GenerateRequest& request) {
  const model::LlamaConfig& c = config();
  if (request.prompt.empty()) return absl::InvalidArgumentError("prompt: must not be empty");
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    if (request.prompt[i] < 0 || request.prompt[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt[", i, "]: token id ", request.prompt[i],
                                                     " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens: must be at least 1, got ", request.max_tokens));
  }
  if (request.position_offset < 0) return absl::InvalidArgumentError("position_offset: must not be negative");
  const int64_t total = static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
  if (total + request.position_offset > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_tokens: prompt (", request.prompt.size(), ") + max_tokens (", request.max_tokens,
        ") + position offset (", request.position_offset, ") exceeds the context of ",
        c.max_position_embeddings, " tokens"));
  }
  STRATA_RETURN_IF_ERROR(EnsureCache(total));

  kernels::SequenceChunk seq;
  seq.position_offset = request.position_offset;
  const int64_t blocks = (total + options_.block_size - 1) / options_.block_size;
  for (int64_t b = 0; b < blocks; ++b) seq.block_table.push_back(static_cast<int32_t>(b));

  GenerateResult result;
  const float* logits = nullptr;
  auto clock = [] { return std::chrono::steady_clock::now(); };
  auto t0 = clock();
  // Prefill in chunks; only the last chunk's last row needs logits.
  const int64_t prompt_len = static_cast<int64_t>(request.prompt.size());
  for (int64_t start = 0; start < prompt_len; start += options_.prefill_chunk) {
    const int64_t n = std::min(options_.prefill_chunk, prompt_len - start);
    seq.cached_tokens = static_cast<int32_t>(start);
    seq.num_tokens = static_cast<int32_t>(n);
    kernels::StepLayout layout;
    layout.sequences = {seq};
    std::vector<int32_t> ids(request.prompt.begin() + start, request.prompt.begin() + start + n);
    const bool last = start + n == prompt_len;
    std::vector<int64_t> rows;
    if (last) rows.push_back(n - 1);
    STRATA_ASSIGN_OR_RETURN(logits, executor_->ForwardLogits(layout, ids, {}, rows, cache_.get()));
  }
  auto t1 = clock();
  int64_t cached = prompt_len;
  for (;;) {
    STRATA_ASSIGN_OR_RETURN(const int32_t next, NextToken(logits, request.return_logits, &result));
    const bool eos = std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), next) != c.eos_token_ids.end();
    if (eos && !request.ignore_eos) {
      result.finish_reason = "stop";
      break;
    }
    if (static_cast<int64_t>(result.tokens.size()) >= request.max_tokens) {
      result.finish_reason = "length";
      break;
    }
    seq.cached_tokens = static_cast<int32_t>(cached);
    seq.num_tokens = 1;
    kernels::StepLayout layout;
    layout.sequences = {seq};
    STRATA_ASSIGN_OR_RETURN(logits, executor_->ForwardLogits(layout, {next}, {}, {0}, cache_.get()));
    ++cached;
  }
  auto t2 = clock();
  result.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  result.decode_seconds = std::chrono::duration<double>(t2 - t1).count();
  return result;
}

}  // namespace strata::worker
