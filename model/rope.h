// Rotary position embedding frequencies, with Llama 3's frequency scaling
// computed exactly as Hugging Face's _compute_llama3_parameters does (in
// float32), and the rotate_half convention: element j pairs with
// j + head_dim/2.
#ifndef STRATA_MODEL_ROPE_H_
#define STRATA_MODEL_ROPE_H_

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace strata::model {

// inv_freq[i] for i in [0, head_dim/2).
std::vector<float> RopeInverseFrequencies(const LlamaConfig& config);

// cos and sin of the angle position * inv_freq[i], the angle rounded to
// float32 first, as PyTorch computes it. cos, sin: [head_dim/2].
void RopeCosSin(const std::vector<float>& inv_freq, int64_t position, float* cos, float* sin);

// Rotates one head in place: x: [head_dim], cos/sin: [head_dim/2].
void ApplyRotaryToHead(float* x, int64_t head_dim, const float* cos, const float* sin);

}  // namespace strata::model

#endif  // STRATA_MODEL_ROPE_H_
