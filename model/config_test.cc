#include "model/config.h"

#include <string>

#include "gtest/gtest.h"

namespace strata::model {
namespace {

// The shape of Meta's Llama 3.1 8B config.json.
constexpr char kLlama31_8B[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

TEST(ConfigTest, ParsesLlama31) {
  auto c = ParseLlamaConfig(kLlama31_8B);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 14336);
  EXPECT_EQ(c->num_layers, 32);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);  // derived: hidden / heads
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c->rope_scaling->factor, 8.0);
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c->group_size(), 4);
}

TEST(ConfigTest, RoundTripsThroughJson) {
  for (const char* preset : {"tiny", "1b", "8b", "70b", "405b"}) {
    auto c = LlamaPreset(preset);
    ASSERT_TRUE(c.ok()) << preset;
    auto back = ParseLlamaConfig(LlamaConfigToJson(*c));
    ASSERT_TRUE(back.ok()) << preset << ": " << back.status();
    EXPECT_EQ(back->hidden_size, c->hidden_size);
    EXPECT_EQ(back->head_dim, c->head_dim);
    EXPECT_EQ(back->eos_token_ids, c->eos_token_ids);
    EXPECT_EQ(back->rope_scaling.has_value(), c->rope_scaling.has_value());
  }
}

TEST(ConfigTest, PresetsHaveTheRealShapes) {
  auto c405 = *LlamaPreset("405b");
  EXPECT_EQ(c405.hidden_size, 16384);
  EXPECT_EQ(c405.num_layers, 126);
  EXPECT_EQ(c405.num_heads, 128);
  EXPECT_EQ(c405.intermediate_size, 53248);
  // 405.85 B parameters (DESIGN.md section 1).
  EXPECT_NEAR(c405.ParameterCount() / 1e9, 405.85, 0.01);
  auto c70 = *LlamaPreset("70b");
  EXPECT_NEAR(c70.ParameterCount() / 1e9, 70.55, 0.01);
  auto c8 = *LlamaPreset("8b");
  EXPECT_NEAR(c8.ParameterCount() / 1e9, 8.03, 0.01);
  auto tiny = *LlamaPreset("tiny");
  EXPECT_EQ(tiny.group_size(), 4);
  EXPECT_FALSE(LlamaPreset("3b").ok());
}

struct BadCase {
  std::string from;  // replaced in kLlama31_8B
  std::string to;
  std::string field;  // must appear in the message
};

TEST(ConfigTest, RejectsBadConfigsNamingTheField) {
  const BadCase cases[] = {
      {"\"LlamaForCausalLM\"", "\"MistralForCausalLM\"", "architectures"},
      {"\"hidden_size\": 4096,", "", "hidden_size"},
      {"\"hidden_size\": 4096", "\"hidden_size\": \"4096\"", "hidden_size"},
      {"\"num_key_value_heads\": 8", "\"num_key_value_heads\": 7", "num_key_value_heads"},
      {"\"num_hidden_layers\": 32", "\"num_hidden_layers\": 0", "num_hidden_layers"},
      {"\"rope_type\": \"llama3\"", "\"rope_type\": \"yarn\"", "rope_scaling.rope_type"},
      {"\"factor\": 8.0,", "", "factor"},
      {"\"rms_norm_eps\": 1e-05,", "", "rms_norm_eps"},
      {"\"tie_word_embeddings\": false", "\"tie_word_embeddings\": 0", "tie_word_embeddings"},
      {"[128001, 128008, 128009]", "[128001, \"x\"]", "eos_token_id"},
      {"[128001, 128008, 128009]", "[999999]", "eos_token_id"},
      {"\"attention_bias\": false", "\"attention_bias\": true", "attention_bias"},
      {"\"vocab_size\": 128256", "\"vocab_size\": 99999999999", "vocab_size"},
  };
  for (const BadCase& bc : cases) {
    std::string text = kLlama31_8B;
    size_t pos = text.find(bc.from);
    ASSERT_NE(pos, std::string::npos) << bc.from;
    text.replace(pos, bc.from.size(), bc.to);
    auto c = ParseLlamaConfig(text);
    ASSERT_FALSE(c.ok()) << "accepted: " << bc.to;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(bc.field), absl::string_view::npos)
        << c.status().message() << " should name " << bc.field;
  }
  EXPECT_FALSE(ParseLlamaConfig("{not json").ok());
  EXPECT_FALSE(ParseLlamaConfig("[1, 2]").ok());
  EXPECT_FALSE(ParseLlamaConfig("").ok());
}

}  // namespace
}  // namespace strata::model
