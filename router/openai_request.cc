// Parsing half of router/openai_api.h: JSON bodies into GenerateRequests.

#include "absl/strings/str_cat.h"
#include "router/openai_api.h"

namespace strata::router::openai {
namespace {

using json = nlohmann::json;

absl::Status Bad(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// Each reader leaves `out` alone when the field is absent or null.
absl::Status ReadBool(const json& body, const char* field, bool* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return Bad(field, "must be a boolean");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadInt(const json& body, const char* field, int64_t lo, int64_t hi, bool* present, int64_t* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return Bad(field, "must be an integer");
  const int64_t v = it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                        ? INT64_MAX
                        : it->get<int64_t>();
  if (v < lo || v > hi) return Bad(field, absl::StrCat(v, " is outside [", lo, ", ", hi, "]"));
  *present = true;
  *out = v;
  return absl::OkStatus();
}

absl::Status ReadNumber(const json& body, const char* field, double lo, double hi, bool* present, double* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Bad(field, "must be a number");
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi)) return Bad(field, absl::StrCat(v, " is outside [", lo, ", ", hi, "]"));
  *present = true;
  *out = v;
  return absl::OkStatus();
}

absl::Status ReadPrompt(const json& body, v1::GenerateRequest* g) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return Bad("prompt", "is required");
  if (it->is_string()) {
    if (it->get_ref<const std::string&>().empty()) return Bad("prompt", "is empty");
    g->set_prompt(it->get<std::string>());
    return absl::OkStatus();
  }
  if (!it->is_array() || it->empty()) return Bad("prompt", "must be a string or a non-empty list of token ids");
  if ((*it)[0].is_string() || (*it)[0].is_array()) {
    return Bad("prompt", "a list of prompts is not supported: send one prompt per request");
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const json& id = (*it)[i];
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      return Bad(absl::StrCat("prompt[", i, "]"), "must be a token id (a non-negative integer)");
    }
    g->add_prompt_ids(static_cast<int32_t>(id.get<int64_t>()));
  }
  return absl::OkStatus();
}

// "content" as a string, or a list of {"type": "text", "text": ...} parts.
absl::StatusOr<std::string> ContentOf(const json& message, const std::string& field) {
  auto it = message.find("content");
  if (it == message.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) return Bad(field, "must be a string or a list of text parts");
  std::string text;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& part = (*it)[i];
    auto type = part.is_object() ? part.find("type") : part.end();
    auto t = part.is_object() ? part.find("text") : part.end();
    if (type == part.end() || !type->is_string() || *type != "text" || t == part.end() || !t->is_string()) {
      return Bad(absl::StrCat(field, "[", i, "]"), "only {\"type\": \"text\", \"text\": ...} parts are supported");
    }
    text += t->get<std::string>();
  }
  return text;
}

absl::Status ReadMessages(const json& body, v1::GenerateRequest* g) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty()) return Bad("messages", "must be a non-empty list");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Bad(field, "must be an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return Bad(field + ".role", "must be a string");
    auto content = ContentOf(m, field + ".content");
    if (!content.ok()) return content.status();
    v1::ChatMessage* out = g->add_messages();
    out->set_role(role->get<std::string>());
    out->set_content(*content);
  }
  return absl::OkStatus();
}

absl::Status ReadStop(const json& body, v1::GenerateRequest* g) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    g->mutable_stop()->add_stop_strings(it->get<std::string>());
    return absl::OkStatus();
  }
  if (!it->is_array()) return Bad("stop", "must be a string or a list of strings");
  for (size_t i = 0; i < it->size(); ++i) {
    if (!(*it)[i].is_string()) return Bad(absl::StrCat("stop[", i, "]"), "must be a string");
    g->mutable_stop()->add_stop_strings((*it)[i].get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ReadSampling(const json& body, v1::GenerateRequest* g) {
  bool has = false;
  double temperature = 1.0, top_p = 1.0;
  int64_t top_k = 0, seed = 0;
  if (auto s = ReadNumber(body, "temperature", 0, 2, &has, &temperature); !s.ok()) return s;
  if (auto s = ReadNumber(body, "top_p", 0, 1, &has, &top_p); !s.ok()) return s;
  if (top_p == 0) return Bad("top_p", "must be above 0");
  if (auto s = ReadInt(body, "top_k", -1, 1 << 20, &has, &top_k); !s.ok()) return s;
  bool has_seed = false;
  if (auto s = ReadInt(body, "seed", INT64_MIN, INT64_MAX, &has_seed, &seed); !s.ok()) return s;
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    double v = 0;
    if (auto s = ReadNumber(body, penalty, -2, 2, &has, &v); !s.ok()) return s;
    if (v != 0) return Bad(penalty, "only 0 is supported");
  }
  v1::SamplingParams* sp = g->mutable_sampling();
  sp->set_temperature(static_cast<float>(temperature));
  sp->set_top_p(static_cast<float>(top_p));
  sp->set_top_k(top_k < 0 ? 0 : static_cast<int32_t>(top_k));  // vLLM's -1: off
  // Without a seed, sampling is random as OpenAI's is: validation draws one
  // for a request that has none (router/validation.cc).
  if (has_seed) sp->set_seed(static_cast<uint64_t>(seed));
  return absl::OkStatus();
}

absl::Status ReadLengthsAndFlags(const json& body, Endpoint endpoint, ApiRequest* r) {
  bool has = false;
  int64_t max_tokens = endpoint == Endpoint::kCompletions ? 16 : 256, n = 1;
  if (auto s = ReadInt(body, "max_completion_tokens", 1, INT32_MAX, &has, &max_tokens); !s.ok()) return s;
  if (auto s = ReadInt(body, "max_tokens", 1, INT32_MAX, &has, &max_tokens); !s.ok()) return s;
  r->generate.mutable_stop()->set_max_tokens(static_cast<int32_t>(max_tokens));
  if (auto s = ReadInt(body, "n", 1, INT32_MAX, &has, &n); !s.ok()) return s;
  if (n != 1) return Bad("n", "only n = 1 is supported");
  bool echo = false, ignore_eos = false;
  if (auto s = ReadBool(body, "echo", &echo); !s.ok()) return s;
  if (echo) return Bad("echo", "is not supported");
  if (auto s = ReadBool(body, "ignore_eos", &ignore_eos); !s.ok()) return s;
  r->generate.mutable_stop()->set_ignore_eos(ignore_eos);
  if (auto s = ReadBool(body, "stream", &r->stream); !s.ok()) return s;
  auto options = body.find("stream_options");
  if (options != body.end() && !options->is_null()) {
    if (!options->is_object()) return Bad("stream_options", "must be an object");
    if (auto s = ReadBool(*options, "include_usage", &r->include_usage); !s.ok()) {
      return Bad("stream_options.include_usage", "must be a boolean");
    }
  }
  auto user = body.find("user");
  if (user != body.end() && !user->is_null() && !user->is_string()) return Bad("user", "must be a string");
  auto model = body.find("model");
  if (model != body.end() && !model->is_null()) {
    if (!model->is_string()) return Bad("model", "must be a string");
    r->model = model->get<std::string>();
    r->generate.set_model(r->model);
  }
  return absl::OkStatus();
}

absl::Status ReadLogprobs(const json& body, Endpoint endpoint, ApiRequest* r) {
  bool has = false;
  int64_t top = 0;
  if (endpoint == Endpoint::kCompletions) {
    // Completions: "logprobs": n asks for the chosen token's and the top n.
    if (auto s = ReadInt(body, "logprobs", 0, 20, &has, &top); !s.ok()) return s;
    r->logprobs = has;
  } else {
    if (auto s = ReadBool(body, "logprobs", &r->logprobs); !s.ok()) return s;
    if (auto s = ReadInt(body, "top_logprobs", 0, 20, &has, &top); !s.ok()) return s;
    if (has && !r->logprobs) return Bad("top_logprobs", "needs \"logprobs\": true");
  }
  r->top_logprobs = static_cast<int32_t>(top);
  r->generate.set_return_logprobs(r->logprobs);
  r->generate.set_logprobs(r->logprobs ? static_cast<int32_t>(top) : -1);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ApiRequest> ParseRequest(Endpoint endpoint, const std::string& body_text) {
  json body = json::parse(body_text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return Bad("body", "is not valid JSON (UTF-8)");
  if (!body.is_object()) return Bad("body", "must be a JSON object");
  ApiRequest r;
  r.endpoint = endpoint;
  if (auto s = endpoint == Endpoint::kCompletions ? ReadPrompt(body, &r.generate) : ReadMessages(body, &r.generate);
      !s.ok()) {
    return s;
  }
  if (auto s = ReadLengthsAndFlags(body, endpoint, &r); !s.ok()) return s;
  if (auto s = ReadSampling(body, &r.generate); !s.ok()) return s;
  if (auto s = ReadStop(body, &r.generate); !s.ok()) return s;
  if (auto s = ReadLogprobs(body, endpoint, &r); !s.ok()) return s;
  return r;
}

}  // namespace strata::router::openai
