// The architecture of a Llama 3.x checkpoint, parsed from Hugging Face's
// config.json (LlamaForCausalLM), and the presets strata knows by name.
#ifndef STRATA_MODEL_CONFIG_H_
#define STRATA_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::model {

// config.json "rope_scaling" with rope_type "llama3".
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 500000.0;
  std::optional<Llama3RopeScaling> rope_scaling;  // none: plain RoPE
  int64_t max_position_embeddings = 131072;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 128000;
  std::vector<int64_t> eos_token_ids = {128001};
  std::string torch_dtype = "bfloat16";

  int64_t q_size() const { return num_heads * head_dim; }
  int64_t kv_size() const { return num_kv_heads * head_dim; }
  int64_t group_size() const { return num_heads / num_kv_heads; }
  // Parameters in the checkpoint (lm_head counted once when tied).
  int64_t ParameterCount() const;

  // Checks every invariant the engine relies on (positive sizes, heads
  // divisible by KV heads, even head_dim, ...). The message names the field.
  absl::Status Validate() const;
};

// Parses config.json text. Unknown architectures, missing required fields,
// wrong JSON types and unsupported rope_scaling types are INVALID_ARGUMENT
// errors naming the field.
absl::StatusOr<LlamaConfig> ParseLlamaConfig(absl::string_view json_text);

// Writes a config.json that ParseLlamaConfig (and Hugging Face) reads back.
std::string LlamaConfigToJson(const LlamaConfig& config);

// Presets: "8b", "70b", "405b" (Llama 3.1 shapes), "1b" (hidden 2048,
// 16 layers, 32/8 heads, head_dim 64, FFN 8192, vocab 128256, untied) and
// "tiny" (unit-test size, GQA ratio 4).
absl::StatusOr<LlamaConfig> LlamaPreset(absl::string_view name);

}  // namespace strata::model

#endif  // STRATA_MODEL_CONFIG_H_
