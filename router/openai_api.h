// The OpenAI-compatible API as data: a completions or chat-completions JSON
// body becomes a strata.v1.GenerateRequest (so it takes the same intake,
// scheduler and output processor as gRPC), and output chunks become
// OpenAI's JSON objects (`text_completion`, `chat.completion`, their
// streaming chunks) and error bodies. No I/O here; http_gateway serves it.
//
// Fields: model, prompt (a string or token ids) / messages, max_tokens (or
// max_completion_tokens), temperature (default 1, as OpenAI's), top_p,
// seed (absent: a random one), stop (a string or a list), n (1 only),
// logprobs / top_logprobs, user, stream, stream_options.include_usage, and
// vLLM's extensions top_k and ignore_eos. Unknown fields are ignored;
// fields of the wrong type are INVALID_ARGUMENT naming the field.
#ifndef STRATA_ROUTER_OPENAI_API_H_
#define STRATA_ROUTER_OPENAI_API_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "router/output_processor.h"
#include "strata/v1/inference.pb.h"

namespace strata::router::openai {

enum class Endpoint { kCompletions, kChatCompletions };

struct ApiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  v1::GenerateRequest generate;
  std::string model;          // as the client named it (empty: the served one)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;       // return the chosen tokens' logprobs
  int32_t top_logprobs = 0;
};

// Parses a request body. INVALID_ARGUMENT whose message starts with the
// OpenAI field's name ("max_tokens: ...") for anything malformed.
absl::StatusOr<ApiRequest> ParseRequest(Endpoint endpoint, const std::string& body);

// A failed status as OpenAI's error body and its HTTP status. Messages
// from the shared validation name strata's fields ("stop.max_tokens");
// they are renamed to the OpenAI field the client sent ("max_tokens").
struct ApiError {
  int http_status = 500;
  nlohmann::json body;
};
ApiError ErrorFor(const absl::Status& status);

// Builds the reply objects of one request.
class ReplyWriter {
 public:
  // `tokenizer` (may be null) turns ids into token strings for logprobs.
  ReplyWriter(const ApiRequest& request, std::string served_model, const model::Tokenizer* tokenizer);

  // One streaming chunk for `chunk` (its text and logprobs), then the
  // finish chunk when it finished; empty when there is nothing to send.
  std::vector<nlohmann::json> StreamChunks(const OutputChunk& chunk);
  // With stream_options.include_usage: the last chunk, usage only.
  nlohmann::json UsageChunk() const;
  // Accumulates a chunk for the non-streaming reply.
  void Add(const OutputChunk& chunk);
  // The whole non-streaming reply (after the finishing chunk was added).
  nlohmann::json Complete() const;

 private:
  nlohmann::json Envelope(bool chunk) const;
  nlohmann::json Logprobs(const std::vector<TokenOut>& tokens) const;
  std::string TokenText(int32_t id) const;
  const char* FinishReason() const;

  const ApiRequest& request_;
  const std::string model_;
  const model::Tokenizer* tokenizer_;
  const std::string id_;
  const int64_t created_;
  bool sent_role_ = false;
  std::string text_;
  std::vector<TokenOut> tokens_;
  bool finished_ = false;
  Finish reason_ = Finish::kStop;
  int32_t prompt_tokens_ = 0, completion_tokens_ = 0;
};

// GET /v1/models.
nlohmann::json ModelList(const std::string& served_model, int64_t context_length);

}  // namespace strata::router::openai

#endif  // STRATA_ROUTER_OPENAI_API_H_
