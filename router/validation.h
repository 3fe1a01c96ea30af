// Checks public API requests against the served model and the router's
// limits before anything is queued. Every violation is INVALID_ARGUMENT with
// the field's name, as DESIGN.md section 6 asks.
#ifndef STRATA_ROUTER_VALIDATION_H_
#define STRATA_ROUTER_VALIDATION_H_

#include <vector>

#include "absl/status/statusor.h"
#include "model/tokenizer.h"
#include "router/scheduler.h"
#include "strata/v1/inference.pb.h"

namespace strata::router {

struct Limits {
  int64_t vocab_size = 0;
  int64_t context_length = 0;     // max_position_embeddings
  int64_t kv_capacity_tokens = 0; // the smallest replica's KV pool, in tokens (0: unknown)
  int32_t max_tokens_limit = 4096;
  int64_t max_prompt_tokens = 32768;
  int32_t max_stop_ids = 64;
  int32_t max_stop_strings = 16;
  int32_t max_stop_string_bytes = 256;
  std::vector<int64_t> eos_ids;
  bool has_tokenizer = false;      // stop strings need one
};

// The prompt as token ids, from exactly one of prompt_ids, prompt (text,
// BOS prepended) and messages (the Llama 3.1 chat format); `tokenizer` may
// be null (token ids only). *chat is set for messages. CANCELLED when
// `cancelled` says so while tokenizing (model::Tokenizer::Cancelled).
absl::StatusOr<std::vector<int32_t>> ResolvePrompt(const v1::GenerateRequest& request, const model::Tokenizer* tokenizer,
                                                   bool* chat, const model::Tokenizer::Cancelled& cancelled = {});
std::vector<model::ChatMessage> ChatMessages(const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages);

// A Generate request as a scheduler sequence.
absl::StatusOr<SequenceSpec> ValidateGenerate(const v1::GenerateRequest& request, const Limits& limits);
// A Score request as a scheduler sequence.
absl::StatusOr<SequenceSpec> ValidateScore(const v1::ScoreRequest& request, const Limits& limits);

}  // namespace strata::router

#endif  // STRATA_ROUTER_VALIDATION_H_
