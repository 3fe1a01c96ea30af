#include "model/config.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "base/status_macros.h"

namespace strata::model {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: field \"", field, "\" ", what));
}

// Reads an integer field. `required`: absent is an error; else `value` keeps
// its default. JSON null counts as absent.
absl::Status ReadInt(const Json& j, const char* field, bool required, int64_t* value) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    return required ? FieldError(field, "is missing") : absl::OkStatus();
  }
  if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  *value = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const Json& j, const char* field, bool required, double* value) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    return required ? FieldError(field, "is missing") : absl::OkStatus();
  }
  if (!it->is_number()) return FieldError(field, "must be a number");
  *value = it->get<double>();
  if (!std::isfinite(*value)) return FieldError(field, "must be finite");
  return absl::OkStatus();
}

absl::Status ReadRopeScaling(const Json& j, LlamaConfig* config) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) {
    config->rope_scaling.reset();
    return absl::OkStatus();
  }
  if (!it->is_object()) return FieldError("rope_scaling", "must be an object or null");
  const Json& rs = *it;
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto t = rs.find(key);
    if (t != rs.end() && !t->is_null()) {
      if (!t->is_string()) return FieldError(absl::StrCat("rope_scaling.", key), "must be a string");
      type = t->get<std::string>();
      break;
    }
  }
  if (type.empty()) return FieldError("rope_scaling.rope_type", "is missing");
  if (type == "default") {
    config->rope_scaling.reset();
    return absl::OkStatus();
  }
  if (type != "llama3") {
    return FieldError("rope_scaling.rope_type",
                      absl::StrCat("is \"", type, "\"; strata supports \"llama3\" and \"default\""));
  }
  Llama3RopeScaling s;
  STRATA_RETURN_IF_ERROR(ReadDouble(rs, "factor", true, &s.factor));
  STRATA_RETURN_IF_ERROR(ReadDouble(rs, "low_freq_factor", true, &s.low_freq_factor));
  STRATA_RETURN_IF_ERROR(ReadDouble(rs, "high_freq_factor", true, &s.high_freq_factor));
  STRATA_RETURN_IF_ERROR(ReadInt(rs, "original_max_position_embeddings", true,
                                 &s.original_max_position_embeddings));
  config->rope_scaling = s;
  return absl::OkStatus();
}

absl::Status ReadTokenIds(const Json& j, const char* field, std::vector<int64_t>* ids) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  ids->clear();
  if (it->is_number_integer()) {
    ids->push_back(it->get<int64_t>());
    return absl::OkStatus();
  }
  if (!it->is_array()) return FieldError(field, "must be an integer or a list of integers");
  for (const Json& e : *it) {
    if (!e.is_number_integer()) return FieldError(field, "must hold integers only");
    ids->push_back(e.get<int64_t>());
  }
  return absl::OkStatus();
}

}  // namespace

int64_t LlamaConfig::ParameterCount() const {
  const int64_t per_layer = hidden_size * q_size() * 2 + hidden_size * kv_size() * 2 +
                            3 * hidden_size * intermediate_size + 2 * hidden_size;
  return num_layers * per_layer + vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) +
         hidden_size;
}

absl::Status LlamaConfig::Validate() const {
  auto positive = [](const char* field, int64_t v) -> absl::Status {
    if (v <= 0) return FieldError(field, absl::StrCat("must be positive, got ", v));
    return absl::OkStatus();
  };
  STRATA_RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  STRATA_RETURN_IF_ERROR(positive("intermediate_size", intermediate_size));
  STRATA_RETURN_IF_ERROR(positive("num_hidden_layers", num_layers));
  STRATA_RETURN_IF_ERROR(positive("num_attention_heads", num_heads));
  STRATA_RETURN_IF_ERROR(positive("num_key_value_heads", num_kv_heads));
  STRATA_RETURN_IF_ERROR(positive("head_dim", head_dim));
  STRATA_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  STRATA_RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  // Generous ceilings keep size arithmetic far from overflow.
  if (hidden_size > (1 << 20) || intermediate_size > (1 << 22) || num_layers > 4096 ||
      num_heads > 4096 || head_dim > 1024 || vocab_size > (1 << 24) ||
      max_position_embeddings > (1 << 24)) {
    return absl::InvalidArgumentError(
        "config.json: a size field is beyond strata's limits (hidden_size <= 2^20, "
        "intermediate_size <= 2^22, num_hidden_layers <= 4096, num_attention_heads <= 4096, "
        "head_dim <= 1024, vocab_size <= 2^24, max_position_embeddings <= 2^24)");
  }
  if (num_heads % num_kv_heads != 0) {
    return FieldError("num_key_value_heads",
                      absl::StrCat("(", num_kv_heads, ") must divide num_attention_heads (",
                                   num_heads, ")"));
  }
  if (head_dim % 2 != 0) return FieldError("head_dim", absl::StrCat("must be even, got ", head_dim));
  if (!(rms_norm_eps > 0)) return FieldError("rms_norm_eps", "must be positive");
  if (!(rope_theta > 1)) return FieldError("rope_theta", "must be greater than 1");
  if (rope_scaling) {
    const auto& s = *rope_scaling;
    if (!(s.factor >= 1)) return FieldError("rope_scaling.factor", "must be at least 1");
    if (!(s.low_freq_factor > 0)) return FieldError("rope_scaling.low_freq_factor", "must be positive");
    if (!(s.high_freq_factor > s.low_freq_factor)) {
      return FieldError("rope_scaling.high_freq_factor", "must be greater than low_freq_factor");
    }
    if (s.original_max_position_embeddings <= 0) {
      return FieldError("rope_scaling.original_max_position_embeddings", "must be positive");
    }
  }
  if (bos_token_id < 0 || bos_token_id >= vocab_size) {
    return FieldError("bos_token_id", absl::StrCat("(", bos_token_id, ") is outside the vocabulary"));
  }
  for (int64_t id : eos_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return FieldError("eos_token_id", absl::StrCat("(", id, ") is outside the vocabulary"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LlamaConfig> ParseLlamaConfig(absl::string_view json_text) {
  Json j = Json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("config.json: not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: top level must be an object");

  bool is_llama = false;
  std::string seen;
  auto arch = j.find("architectures");
  if (arch != j.end() && !arch->is_null()) {
    if (!arch->is_array()) return FieldError("architectures", "must be a list of strings");
    for (const Json& a : *arch) {
      if (!a.is_string()) return FieldError("architectures", "must be a list of strings");
      seen += (seen.empty() ? "" : ", ") + a.get<std::string>();
      if (a.get<std::string>() == "LlamaForCausalLM") is_llama = true;
    }
    if (!is_llama) {
      return FieldError("architectures",
                        absl::StrCat("is [", seen, "]; strata serves LlamaForCausalLM only"));
    }
  } else {
    auto mt = j.find("model_type");
    if (mt == j.end() || !mt->is_string()) {
      return FieldError("architectures", "is missing (and there is no model_type)");
    }
    if (mt->get<std::string>() != "llama") {
      return FieldError("model_type", absl::StrCat("is \"", mt->get<std::string>(),
                                                   "\"; strata serves llama only"));
    }
  }

  LlamaConfig c;
  STRATA_RETURN_IF_ERROR(ReadInt(j, "hidden_size", true, &c.hidden_size));
  STRATA_RETURN_IF_ERROR(ReadInt(j, "intermediate_size", true, &c.intermediate_size));
  STRATA_RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", true, &c.num_layers));
  STRATA_RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", true, &c.num_heads));
  STRATA_RETURN_IF_ERROR(ReadInt(j, "vocab_size", true, &c.vocab_size));
  STRATA_RETURN_IF_ERROR(ReadDouble(j, "rms_norm_eps", true, &c.rms_norm_eps));
  STRATA_RETURN_IF_ERROR(ReadDouble(j, "rope_theta", true, &c.rope_theta));
  c.num_kv_heads = c.num_heads;  // Hugging Face's default
  STRATA_RETURN_IF_ERROR(ReadInt(j, "num_key_value_heads", false, &c.num_kv_heads));
  if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  STRATA_RETURN_IF_ERROR(ReadInt(j, "head_dim", false, &c.head_dim));
  STRATA_RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", true, &c.max_position_embeddings));
  STRATA_RETURN_IF_ERROR(ReadRopeScaling(j, &c));

  auto tie = j.find("tie_word_embeddings");
  if (tie != j.end() && !tie->is_null()) {
    if (!tie->is_boolean()) return FieldError("tie_word_embeddings", "must be true or false");
    c.tie_word_embeddings = tie->get<bool>();
  }
  STRATA_RETURN_IF_ERROR(ReadInt(j, "bos_token_id", false, &c.bos_token_id));
  STRATA_RETURN_IF_ERROR(ReadTokenIds(j, "eos_token_id", &c.eos_token_ids));
  auto dt = j.find("torch_dtype");
  if (dt != j.end() && dt->is_string()) c.torch_dtype = dt->get<std::string>();
  for (const char* bias : {"attention_bias", "mlp_bias"}) {
    auto b = j.find(bias);
    if (b != j.end() && b->is_boolean() && b->get<bool>()) {
      return FieldError(bias, "is true; Llama 3 has no biases and strata does not load them");
    }
  }
  auto act = j.find("hidden_act");
  if (act != j.end() && act->is_string() && act->get<std::string>() != "silu") {
    return FieldError("hidden_act", absl::StrCat("is \"", act->get<std::string>(),
                                                 "\"; Llama uses silu"));
  }
  STRATA_RETURN_IF_ERROR(c.Validate());
  return c;
}

std::string LlamaConfigToJson(const LlamaConfig& c) {
  Json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling) {
    j["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", c.rope_scaling->factor},
        {"low_freq_factor", c.rope_scaling->low_freq_factor},
        {"high_freq_factor", c.rope_scaling->high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling->original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["torch_dtype"] = c.torch_dtype;
  return j.dump(2) + "\n";
}

absl::StatusOr<LlamaConfig> LlamaPreset(absl::string_view name) {
  LlamaConfig c;
  c.rope_scaling = Llama3RopeScaling{};
  c.vocab_size = 128256;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.eos_token_ids = {128001, 128008, 128009};
  if (name == "405b") {
    c.hidden_size = 16384;
    c.num_layers = 126;
    c.num_heads = 128;
    c.intermediate_size = 53248;
  } else if (name == "70b") {
    c.hidden_size = 8192;
    c.num_layers = 80;
    c.num_heads = 64;
    c.intermediate_size = 28672;
  } else if (name == "8b") {
    c.hidden_size = 4096;
    c.num_layers = 32;
    c.num_heads = 32;
    c.intermediate_size = 14336;
  } else if (name == "1b") {
    c.hidden_size = 2048;
    c.num_layers = 16;
    c.num_heads = 32;
    c.head_dim = 64;
    c.intermediate_size = 8192;
  } else if (name == "tiny") {
    c.hidden_size = 128;
    c.num_layers = 4;
    c.num_heads = 8;
    c.num_kv_heads = 2;
    c.head_dim = 16;
    c.intermediate_size = 256;
    c.vocab_size = 512;
    c.max_position_embeddings = 131072;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown preset \"", name, "\" (known: tiny, 1b, 8b, 70b, 405b)"));
  }
  STRATA_RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace strata::model
