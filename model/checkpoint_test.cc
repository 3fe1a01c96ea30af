#include "model/checkpoint.h"

#include <cstring>

#include "gtest/gtest.h"
#include "model/make_model.h"

namespace strata::model {
namespace {

MakeModelOptions Tiny(int shards, DType dtype = DType::kBF16) {
  MakeModelOptions o;
  o.config = *LlamaPreset("tiny");
  o.config.num_layers = 2;
  o.shards = shards;
  o.dtype = dtype;
  o.seed = 7;
  return o;
}

TEST(CheckpointTest, OpensSingleFileAndShardedAlike) {
  InMemoryFileSystem fs;
  ASSERT_TRUE(WriteRandomModel(&fs, "one", Tiny(1)).ok());
  ASSERT_TRUE(WriteRandomModel(&fs, "three", Tiny(3)).ok());
  auto one = Checkpoint::Open(&fs, "one");
  ASSERT_TRUE(one.ok()) << one.status();
  auto three = Checkpoint::Open(&fs, "three");
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_TRUE(fs.Exists("three/model-00003-of-00003.safetensors"));
  EXPECT_EQ((*one)->TensorNames(), (*three)->TensorNames());
  EXPECT_EQ((*one)->TensorNames().size(), 1u + 9 * 2 + 1 + 1);
  // Same seed, same values whatever the sharding.
  for (const std::string& name : (*one)->TensorNames()) {
    auto a = (*one)->Find(name);
    auto b = (*three)->Find(name);
    ASSERT_TRUE(a.ok() && b.ok()) << name;
    ASSERT_EQ(a->num_bytes, b->num_bytes);
    EXPECT_EQ(std::memcmp(a->data, b->data, a->num_bytes), 0) << name;
  }
  EXPECT_EQ((*one)->config().hidden_size, 128);
}

TEST(CheckpointTest, DTypeDoesNotChangeTheValuesBeyondRounding) {
  InMemoryFileSystem fs;
  ASSERT_TRUE(WriteRandomModel(&fs, "bf", Tiny(1, DType::kBF16)).ok());
  ASSERT_TRUE(WriteRandomModel(&fs, "f32", Tiny(1, DType::kF32)).ok());
  auto bf = Checkpoint::Open(&fs, "bf");
  auto f32 = Checkpoint::Open(&fs, "f32");
  ASSERT_TRUE(bf.ok() && f32.ok());
  auto a = (*bf)->Find("model.layers.1.mlp.down_proj.weight");
  auto b = (*f32)->Find("model.layers.1.mlp.down_proj.weight");
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<float> x(a->NumElements()), y(b->NumElements());
  ConvertToFloat(a->dtype, a->data, x.size(), x.data());
  ConvertToFloat(b->dtype, b->data, y.size(), y.data());
  double sum_sq = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR(x[i], y[i], std::abs(y[i]) / 128 + 1e-30);
    sum_sq += y[i] * y[i];
  }
  // Standard deviation 1/sqrt(in_features) = 1/16.
  EXPECT_NEAR(std::sqrt(sum_sq / y.size()), 1.0 / 16, 0.005);
}

TEST(CheckpointTest, RejectsShardNamesLeavingTheFolder) {
  for (const char* bad : {"../evil.safetensors", "/etc/passwd", "sub/x.safetensors", "..", ""}) {
    InMemoryFileSystem fs;
    ASSERT_TRUE(WriteRandomModel(&fs, "m", Tiny(1)).ok());
    fs.SetFile("m/model.safetensors.index.json",
               std::string(R"({"weight_map":{"model.norm.weight":")") + bad + "\"}}");
    auto c = Checkpoint::Open(&fs, "m");
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(CheckpointTest, RejectsSymlinkLeavingTheFolder) {
  InMemoryFileSystem fs;
  ASSERT_TRUE(WriteRandomModel(&fs, "m", Tiny(2)).ok());
  ASSERT_TRUE(WriteRandomModel(&fs, "other", Tiny(2)).ok());
  fs.AddSymlink("m/model-00001-of-00002.safetensors", "other/model-00001-of-00002.safetensors");
  auto c = Checkpoint::Open(&fs, "m");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("outside the model folder"), absl::string_view::npos)
      << c.status();
}

TEST(CheckpointTest, RejectsIndexPointingAtTheWrongShard) {
  InMemoryFileSystem fs;
  ASSERT_TRUE(WriteRandomModel(&fs, "m", Tiny(2)).ok());
  fs.SetFile("m/model.safetensors.index.json",
             R"({"weight_map":{"model.norm.weight":"model-00001-of-00002.safetensors",
                               "model.embed_tokens.weight":"model-00002-of-00002.safetensors"}})");
  auto c = Checkpoint::Open(&fs, "m");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("which lacks it"), absl::string_view::npos) << c.status();
}

TEST(CheckpointTest, MissingPiecesAreClearErrors) {
  InMemoryFileSystem fs;
  EXPECT_EQ(Checkpoint::Open(&fs, "nowhere").status().code(), absl::StatusCode::kNotFound);
  fs.SetFile("m/config.json", LlamaConfigToJson(*LlamaPreset("tiny")));
  auto c = Checkpoint::Open(&fs, "m");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("neither model.safetensors"), absl::string_view::npos);
  fs.SetFile("m/config.json", "{\"architectures\":[\"GPT2LMHeadModel\"]}");
  c = Checkpoint::Open(&fs, "m");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("architectures"), absl::string_view::npos);
}

}  // namespace
}  // namespace strata::model
