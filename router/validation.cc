#include "router/validation.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "model/tokenizer.h"

namespace strata::router {
namespace {

absl::Status Bad(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

absl::Status CheckIds(const google::protobuf::RepeatedField<int32_t>& ids, const std::string& field,
                      const Limits& l) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= l.vocab_size) {
      return Bad(absl::StrCat(field, "[", i, "]"),
                 absl::StrCat("token id ", ids[i], " is outside the vocabulary [0, ", l.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRequestId(const std::string& id) {
  if (id.size() > 256) return Bad("request_id", "longer than 256 bytes");
  if (model::ValidUtf8Prefix(id) != id.size()) return Bad("request_id", "not valid UTF-8");
  return absl::OkStatus();
}

}  // namespace

std::vector<model::ChatMessage> ChatMessages(const google::protobuf::RepeatedPtrField<v1::ChatMessage>& in) {
  std::vector<model::ChatMessage> out;
  for (const auto& m : in) out.push_back({m.role(), m.content()});
  return out;
}

absl::StatusOr<std::vector<int32_t>> ResolvePrompt(const v1::GenerateRequest& r, const model::Tokenizer* tokenizer,
                                                   bool* chat, const model::Tokenizer::Cancelled& cancelled) {
  *chat = false;
  const int sources = (r.prompt_ids_size() > 0) + !r.prompt().empty() + (r.messages_size() > 0);
  if (sources > 1) return absl::InvalidArgumentError("prompt_ids: give exactly one of prompt_ids, prompt and messages");
  if (r.prompt_ids_size() > 0 || sources == 0) return std::vector<int32_t>(r.prompt_ids().begin(), r.prompt_ids().end());
  if (!tokenizer) {
    return absl::InvalidArgumentError(absl::StrCat(r.prompt().empty() ? "messages" : "prompt",
                                                   ": text needs a tokenizer (start the router with --tokenizer DIR)"));
  }
  if (!r.prompt().empty()) {
    auto ids = tokenizer->Encode(r.prompt(), cancelled);
    if (!ids.ok() && ids.status().code() == absl::StatusCode::kCancelled) return ids.status();
    if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("prompt: ", ids.status().message()));
    ids->insert(ids->begin(), model::kBeginOfText);
    return ids;
  }
  *chat = true;
  auto ids = model::ApplyChatTemplate(*tokenizer, ChatMessages(r.messages()), true, cancelled);
  if (!ids.ok() && ids.status().code() == absl::StatusCode::kCancelled) return ids.status();
  if (!ids.ok()) return absl::InvalidArgumentError(ids.status().message());
  return ids;
}

absl::StatusOr<SequenceSpec> ValidateGenerate(const v1::GenerateRequest& r, const Limits& l) {
  if (auto s = CheckRequestId(r.request_id()); !s.ok()) return s;
  if (r.prompt_ids().empty()) return Bad("prompt_ids", "the prompt is empty");
  if (r.prompt_ids_size() > l.max_prompt_tokens) {
    return Bad("prompt_ids", absl::StrCat(r.prompt_ids_size(), " tokens is over the limit of ", l.max_prompt_tokens));
  }
  if (auto s = CheckIds(r.prompt_ids(), "prompt_ids", l); !s.ok()) return s;
  const v1::StopConditions& stop = r.stop();
  const int32_t max_tokens = stop.max_tokens();
  if (max_tokens < 1 || max_tokens > l.max_tokens_limit) {
    return Bad("stop.max_tokens", absl::StrCat(max_tokens, " is outside [1, ", l.max_tokens_limit, "]"));
  }
  const int64_t total = static_cast<int64_t>(r.prompt_ids_size()) + max_tokens;
  if (total > l.context_length) {
    return Bad("stop.max_tokens", absl::StrCat("prompt_ids (", r.prompt_ids_size(), ") + max_tokens (", max_tokens,
                                               ") is over the context length ", l.context_length));
  }
  if (l.kv_capacity_tokens > 0 && total > l.kv_capacity_tokens) {
    return Bad("stop.max_tokens", absl::StrCat("prompt_ids + max_tokens (", total, ") is over the KV cache's ",
                                               l.kv_capacity_tokens, " tokens"));
  }
  if (stop.stop_token_ids_size() > l.max_stop_ids) {
    return Bad("stop.stop_token_ids", absl::StrCat("more than ", l.max_stop_ids, " ids"));
  }
  if (auto s = CheckIds(stop.stop_token_ids(), "stop.stop_token_ids", l); !s.ok()) return s;
  if (stop.stop_strings_size() > l.max_stop_strings) {
    return Bad("stop.stop_strings", absl::StrCat("more than ", l.max_stop_strings, " strings"));
  }
  for (int i = 0; i < stop.stop_strings_size(); ++i) {
    if (stop.stop_strings(i).empty() || static_cast<int32_t>(stop.stop_strings(i).size()) > l.max_stop_string_bytes) {
      return Bad(absl::StrCat("stop.stop_strings[", i, "]"),
                 absl::StrCat("must be 1 to ", l.max_stop_string_bytes, " bytes"));
    }
    const size_t valid = model::ValidUtf8Prefix(stop.stop_strings(i));
    if (valid != stop.stop_strings(i).size()) {
      return Bad(absl::StrCat("stop.stop_strings[", i, "]"), absl::StrCat("not valid UTF-8 at byte ", valid));
    }
  }
  if (stop.stop_strings_size() > 0 && !l.has_tokenizer) {
    return Bad("stop.stop_strings", "stop strings need a tokenizer (start the router with --tokenizer DIR)");
  }
  const v1::SamplingParams& sp = r.sampling();
  if (!std::isfinite(sp.temperature()) || sp.temperature() < 0.0f || sp.temperature() > 2.0f) {
    return Bad("sampling.temperature", absl::StrCat(sp.temperature(), " is outside [0, 2]"));
  }
  if (sp.top_k() < 0) return Bad("sampling.top_k", absl::StrCat(sp.top_k(), " is negative"));
  if (!std::isfinite(sp.top_p()) || sp.top_p() < 0.0f || sp.top_p() > 1.0f) {
    return Bad("sampling.top_p", absl::StrCat(sp.top_p(), " is outside (0, 1]"));
  }
  if (r.logprobs() < -1 || r.logprobs() > 20) return Bad("logprobs", absl::StrCat(r.logprobs(), " is outside [-1, 20]"));
  SequenceSpec spec;
  spec.prompt.assign(r.prompt_ids().begin(), r.prompt_ids().end());
  spec.max_tokens = max_tokens;
  spec.sampling.temperature = sp.greedy() ? 0.0f : sp.temperature();
  spec.sampling.top_k = sp.top_k();
  spec.sampling.top_p = sp.top_p() == 0.0f ? 1.0f : sp.top_p();  // unset
  // Without a seed, sampling is random (as OpenAI's is): a seed drawn here
  // and kept with the request, so a migrated request still continues with
  // the tokens it would have had.
  spec.sampling.seed = sp.has_seed() ? sp.seed()
                                     : (static_cast<uint64_t>(std::random_device()()) << 32) ^ std::random_device()();
  spec.stop_ids.assign(stop.stop_token_ids().begin(), stop.stop_token_ids().end());
  if (!stop.ignore_eos()) {
    for (int64_t e : l.eos_ids) spec.stop_ids.push_back(static_cast<int32_t>(e));
  }
  spec.logprobs = r.logprobs() > 0 ? r.logprobs() : (r.return_logprobs() ? 0 : -1);
  spec.priority = r.priority();
  return spec;
}

absl::StatusOr<SequenceSpec> ValidateScore(const v1::ScoreRequest& r, const Limits& l) {
  if (auto s = CheckRequestId(r.request_id()); !s.ok()) return s;
  if (r.prompt_ids().empty()) return Bad("prompt_ids", "the prompt is empty");
  if (r.continuation_ids().empty()) return Bad("continuation_ids", "nothing to score");
  if (auto s = CheckIds(r.prompt_ids(), "prompt_ids", l); !s.ok()) return s;
  if (auto s = CheckIds(r.continuation_ids(), "continuation_ids", l); !s.ok()) return s;
  const int64_t total = static_cast<int64_t>(r.prompt_ids_size()) + r.continuation_ids_size();
  if (total > l.context_length || total > l.max_prompt_tokens) {
    return Bad("continuation_ids", absl::StrCat("prompt + continuation (", total, " tokens) is over the limit of ",
                                                std::min<int64_t>(l.context_length, l.max_prompt_tokens)));
  }
  if (l.kv_capacity_tokens > 0 && total > l.kv_capacity_tokens) {
    return Bad("continuation_ids", absl::StrCat("prompt + continuation (", total, ") is over the KV cache's ",
                                                l.kv_capacity_tokens, " tokens"));
  }
  SequenceSpec spec;
  spec.score = true;
  spec.prompt.assign(r.prompt_ids().begin(), r.prompt_ids().end());
  spec.continuation.assign(r.continuation_ids().begin(), r.continuation_ids().end());
  return spec;
}

}  // namespace strata::router
