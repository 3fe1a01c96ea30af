// Reply half of router/openai_api.h: output chunks and failures as
// OpenAI's JSON objects.
#include <atomic>
#include <chrono>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "router/openai_api.h"

namespace strata::router::openai {
namespace {

using json = nlohmann::json;

// strata's request fields (validation.cc names these) as the OpenAI
// fields a client sent.
const std::pair<const char*, const char*> kFieldNames[] = {
    {"stop.max_tokens", "max_tokens"}, {"sampling.temperature", "temperature"}, {"sampling.top_p", "top_p"},
    {"sampling.top_k", "top_k"},       {"stop.stop_strings", "stop"},           {"stop.stop_token_ids", "stop"},
    {"prompt_ids", "prompt"},          {"request_id", "user"},
};

std::string NewId(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device()();
  return absl::StrCat(prefix, absl::Hex(salt & 0xffffff), "-", ++counter);
}

}  // namespace

ApiError ErrorFor(const absl::Status& status) {
  std::string message(status.message());
  std::string param;
  const size_t colon = message.find(": ");
  if (status.code() == absl::StatusCode::kInvalidArgument && colon != std::string::npos &&
      message.find(' ') >= colon) {
    param = message.substr(0, colon);
    for (const auto& [ours, theirs] : kFieldNames) {
      if (absl::StartsWith(param, ours)) {
        param = absl::StrCat(theirs, param.substr(strlen(ours)));
        message = absl::StrCat(param, message.substr(colon));
        break;
      }
    }
  }
  ApiError e;
  std::string type = "internal_error", code;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      e.http_status = 400, type = "invalid_request_error", code = "invalid_value";
      break;
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401, type = "authentication_error", code = "invalid_api_key";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.http_status = 403, type = "permission_error", code = "forbidden";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404, type = "invalid_request_error", code = "not_found";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429, type = "rate_limit_error", code = "queue_full";
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503, type = "service_unavailable", code = "no_pipeline";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.http_status = 504, type = "timeout", code = "deadline_exceeded";
      break;
    default:
      e.http_status = 500;
      break;
  }
  e.body = {{"error",
             {{"message", message},
              {"type", type},
              {"param", param.empty() ? json(nullptr) : json(param)},
              {"code", code.empty() ? json(nullptr) : json(code)}}}};
  return e;
}

ReplyWriter::ReplyWriter(const ApiRequest& request, std::string served_model, const model::Tokenizer* tokenizer)
    : request_(request),
      model_(request.model.empty() ? std::move(served_model) : request.model),
      tokenizer_(tokenizer),
      id_(NewId(request.endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-")),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                   .count()) {}

json ReplyWriter::Envelope(bool chunk) const {
  const bool chat = request_.endpoint == Endpoint::kChatCompletions;
  return {{"id", id_},
          {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
          {"created", created_},
          {"model", model_}};
}

std::string ReplyWriter::TokenText(int32_t id) const {
  if (!tokenizer_) return absl::StrCat("token_id:", id);
  auto text = model::DecodeToText(*tokenizer_, {id});
  return text.ok() ? *text : absl::StrCat("token_id:", id);
}

const char* ReplyWriter::FinishReason() const { return reason_ == Finish::kLength ? "length" : "stop"; }

json ReplyWriter::Logprobs(const std::vector<TokenOut>& tokens) const {
  if (!request_.logprobs) return nullptr;
  if (request_.endpoint == Endpoint::kChatCompletions) {
    json content = json::array();
    for (const TokenOut& t : tokens) {
      json top = json::array();
      for (const auto& alt : t.top) top.push_back({{"token", TokenText(alt.token)}, {"logprob", alt.logprob}});
      content.push_back({{"token", TokenText(t.id)}, {"logprob", t.logprob}, {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json lp = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()}};
  for (const TokenOut& t : tokens) {
    lp["tokens"].push_back(TokenText(t.id));
    lp["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const auto& alt : t.top) top[TokenText(alt.token)] = alt.logprob;
    lp["top_logprobs"].push_back(top);
  }
  return lp;
}

std::vector<json> ReplyWriter::StreamChunks(const OutputChunk& chunk) {
  const bool chat = request_.endpoint == Endpoint::kChatCompletions;
  std::vector<json> out;
  auto choice = [&](json delta_or_text) {
    json c = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
    if (chat) {
      c["delta"] = std::move(delta_or_text);
    } else {
      c["text"] = std::move(delta_or_text);
    }
    return c;
  };
  if (!chunk.text.empty() || !chunk.tokens.empty() || (chat && !sent_role_)) {
    json c = chat ? choice(json{{"content", chunk.text}}) : choice(chunk.text);
    if (chat && !sent_role_) c["delta"]["role"] = "assistant";
    sent_role_ = true;
    c["logprobs"] = Logprobs(chunk.tokens);
    json m = Envelope(true);
    m["choices"] = json::array({c});
    if (request_.include_usage) m["usage"] = nullptr;
    out.push_back(std::move(m));
  }
  completion_tokens_ += static_cast<int32_t>(chunk.tokens.size());
  if (chunk.finished) {
    finished_ = true;
    reason_ = chunk.reason;
    prompt_tokens_ = chunk.prompt_tokens;
    completion_tokens_ = chunk.completion_tokens;
    json c = chat ? choice(json::object()) : choice("");
    c["finish_reason"] = FinishReason();
    json m = Envelope(true);
    m["choices"] = json::array({c});
    if (request_.include_usage) m["usage"] = nullptr;
    out.push_back(std::move(m));
  }
  return out;
}

json ReplyWriter::UsageChunk() const {
  json m = Envelope(true);
  m["choices"] = json::array();
  m["usage"] = {{"prompt_tokens", prompt_tokens_},
                {"completion_tokens", completion_tokens_},
                {"total_tokens", prompt_tokens_ + completion_tokens_}};
  return m;
}

void ReplyWriter::Add(const OutputChunk& chunk) {
  text_ += chunk.text;
  tokens_.insert(tokens_.end(), chunk.tokens.begin(), chunk.tokens.end());
  if (chunk.finished) {
    finished_ = true;
    reason_ = chunk.reason;
    prompt_tokens_ = chunk.prompt_tokens;
    completion_tokens_ = chunk.completion_tokens;
  }
}

json ReplyWriter::Complete() const {
  const bool chat = request_.endpoint == Endpoint::kChatCompletions;
  json c = {{"index", 0}, {"logprobs", Logprobs(tokens_)}, {"finish_reason", FinishReason()}};
  if (chat) {
    c["message"] = {{"role", "assistant"}, {"content", text_}};
  } else {
    c["text"] = text_;
  }
  json m = Envelope(false);
  m["choices"] = json::array({c});
  m["usage"] = UsageChunk()["usage"];
  return m;
}

json ModelList(const std::string& served_model, int64_t context_length) {
  json data = json::array();
  if (!served_model.empty()) {
    data.push_back({{"id", served_model},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "strata"},
                    {"max_model_len", context_length}});
  }
  return {{"object", "list"}, {"data", data}};
}

}  // namespace strata::router::openai
