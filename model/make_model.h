// Writes seeded random Llama-3-architecture checkpoints in Hugging Face
// layout, for tests, benchmarks and the default local cluster.
#ifndef STRATA_MODEL_MAKE_MODEL_H_
#define STRATA_MODEL_MAKE_MODEL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "model/config.h"
#include "model/dtype.h"
#include "model/file_system.h"

namespace strata::model {

struct MakeModelOptions {
  LlamaConfig config;
  DType dtype = DType::kBF16;
  uint64_t seed = 0;
  int shards = 1;  // >1: model-0000N-of-0000M.safetensors + index
};

// Writes config.json and the weights into `dir` (created if needed). Each
// tensor's values depend only on the seed and the tensor's name, so the
// same seed gives the same weights whatever the sharding or dtype.
// Scales keep activations finite and logits far from flat: linear weights
// have standard deviation 1/sqrt(in_features), norms 1 +- 0.1, the
// embedding 1, the lm_head 2/sqrt(hidden).
absl::Status WriteRandomModel(FileSystem* fs, const std::string& dir, const MakeModelOptions& options);

// The Hugging Face tensor names of a Llama checkpoint.
std::string LayerTensorName(int64_t layer, const char* suffix);  // "self_attn.q_proj.weight"

}  // namespace strata::model

#endif  // STRATA_MODEL_MAKE_MODEL_H_
