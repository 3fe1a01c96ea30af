#include "model/make_model.h"

#include <cmath>
#include <cstring>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "model/safetensors.h"
#include "base/status_macros.h"

namespace strata::model {
namespace {

// SplitMix64: tiny, fast, and good enough for test weights.
struct SplitMix {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float Uniform() { return static_cast<float>(static_cast<double>(Next() >> 11) * 0x1.0p-52 - 1.0); }
};

uint64_t HashName(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

struct Init {
  float center;  // mean
  float spread;  // standard deviation
};

Init InitFor(const std::string& name, const std::vector<int64_t>& shape, const LlamaConfig& c) {
  if (name.find("norm") != std::string::npos) return {1.0f, 0.1f / std::sqrt(3.0f)};
  // A tied embedding doubles as the lm_head, so it takes the lm_head's scale.
  if (name == "model.embed_tokens.weight") {
    return {0.0f, c.tie_word_embeddings ? 2.0f / std::sqrt(static_cast<float>(c.hidden_size)) : 1.0f};
  }
  if (name == "lm_head.weight") return {0.0f, 2.0f / std::sqrt(static_cast<float>(c.hidden_size))};
  return {0.0f, 1.0f / std::sqrt(static_cast<float>(shape.back()))};
}

}  // namespace

std::string LayerTensorName(int64_t layer, const char* suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

absl::Status WriteRandomModel(FileSystem* fs, const std::string& dir, const MakeModelOptions& options) {
  const LlamaConfig& c = options.config;
  STRATA_RETURN_IF_ERROR(c.Validate());
  if (options.shards < 1 || options.shards > 9999) {
    return absl::InvalidArgumentError(absl::StrCat("shards must be in [1, 9999], got ", options.shards));
  }
  STRATA_RETURN_IF_ERROR(fs->CreateDirs(dir));

  std::vector<TensorSpec> specs;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    specs.push_back(TensorSpec{std::move(name), options.dtype, std::move(shape)});
  };
  const int64_t h = c.hidden_size;
  add("model.embed_tokens.weight", {c.vocab_size, h});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    add(LayerTensorName(l, "input_layernorm.weight"), {h});
    add(LayerTensorName(l, "self_attn.q_proj.weight"), {c.q_size(), h});
    add(LayerTensorName(l, "self_attn.k_proj.weight"), {c.kv_size(), h});
    add(LayerTensorName(l, "self_attn.v_proj.weight"), {c.kv_size(), h});
    add(LayerTensorName(l, "self_attn.o_proj.weight"), {h, c.q_size()});
    add(LayerTensorName(l, "post_attention_layernorm.weight"), {h});
    add(LayerTensorName(l, "mlp.gate_proj.weight"), {c.intermediate_size, h});
    add(LayerTensorName(l, "mlp.up_proj.weight"), {c.intermediate_size, h});
    add(LayerTensorName(l, "mlp.down_proj.weight"), {h, c.intermediate_size});
  }
  add("model.norm.weight", {h});
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, h});

  auto fill = [&](const TensorSpec& t, std::string* bytes) -> absl::Status {
    SplitMix rng{HashName(options.seed, t.name)};
    const Init init = InitFor(t.name, t.shape, c);
    // Uniform on [-1, 1) has standard deviation 1/sqrt(3).
    const float scale = init.spread * std::sqrt(3.0f);
    const int64_t n = static_cast<int64_t>(bytes->size()) / DTypeSize(t.dtype);
    char* out = bytes->data();
    for (int64_t i = 0; i < n; ++i) {
      const float v = init.center + scale * rng.Uniform();
      if (t.dtype == DType::kF32) {
        std::memcpy(out + 4 * i, &v, 4);
      } else {
        const uint16_t half = t.dtype == DType::kBF16 ? FloatToBF16(v) : FloatToF16(v);
        std::memcpy(out + 2 * i, &half, 2);
      }
    }
    return absl::OkStatus();
  };

  LlamaConfig written = c;
  written.torch_dtype = options.dtype == DType::kF32 ? "float32"
                        : options.dtype == DType::kBF16 ? "bfloat16" : "float16";
  std::map<std::string, std::string> metadata = {{"format", "pt"}};

  if (options.shards == 1) {
    STRATA_RETURN_IF_ERROR(WriteSafetensors(fs, JoinPath(dir, "model.safetensors"), specs, metadata, fill));
  } else {
    // Split in order into shards of roughly equal bytes.
    uint64_t total = 0;
    std::vector<uint64_t> sizes;
    for (const TensorSpec& t : specs) {
      sizes.push_back(t.NumBytes());
      total += sizes.back();
    }
    const int shards = std::min<int>(options.shards, static_cast<int>(specs.size()));
    nlohmann::json weight_map = nlohmann::json::object();
    size_t next = 0;
    uint64_t written_bytes = 0;
    for (int s = 0; s < shards; ++s) {
      const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards);
      std::vector<TensorSpec> part;
      const uint64_t target = total * (s + 1) / shards;
      const size_t must_leave = static_cast<size_t>(shards - s - 1);
      while (next < specs.size() && specs.size() - next > must_leave &&
             (part.empty() || written_bytes + sizes[next] / 2 <= target || s == shards - 1)) {
        written_bytes += sizes[next];
        weight_map[specs[next].name] = name;
        part.push_back(specs[next++]);
      }
      STRATA_RETURN_IF_ERROR(WriteSafetensors(fs, JoinPath(dir, name), part, metadata, fill));
    }
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    STRATA_ASSIGN_OR_RETURN(auto f, fs->NewWritableFile(JoinPath(dir, "model.safetensors.index.json")));
    STRATA_RETURN_IF_ERROR(f->Append(index.dump(2) + "\n"));
    STRATA_RETURN_IF_ERROR(f->Close());
  }
  STRATA_ASSIGN_OR_RETURN(auto cf, fs->NewWritableFile(JoinPath(dir, "config.json")));
  STRATA_RETURN_IF_ERROR(cf->Append(LlamaConfigToJson(written)));
  return cf->Close();
}

}  // namespace strata::model
