#include "model/rope.h"

#include <cmath>

namespace strata::model {

std::vector<float> RopeInverseFrequencies(const LlamaConfig& config) {
  const int64_t half = config.head_dim / 2;
  const float base = static_cast<float>(config.rope_theta);
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim))
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(config.head_dim);
    inv_freq[i] = 1.0f / std::pow(base, exponent);
  }
  if (!config.rope_scaling) return inv_freq;

  const auto& s = *config.rope_scaling;
  const float factor = static_cast<float>(s.factor);
  const float low = static_cast<float>(s.low_freq_factor);
  const float high = static_cast<float>(s.high_freq_factor);
  const float old_len = static_cast<float>(s.original_max_position_embeddings);
  const float low_freq_wavelen = old_len / low;
  const float high_freq_wavelen = old_len / high;
  const float pi = 3.141592653589793f;
  for (int64_t i = 0; i < half; ++i) {
    const float wavelen = 2.0f * pi / inv_freq[i];
    // Long wavelengths (low frequencies) are slowed down by `factor`.
    float scaled = wavelen > low_freq_wavelen ? inv_freq[i] / factor : inv_freq[i];
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    if (medium) {
      const float smooth = (old_len / wavelen - low) / (high - low);
      scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
    }
    inv_freq[i] = scaled;
  }
  return inv_freq;
}

void RopeCosSin(const std::vector<float>& inv_freq, int64_t position, float* cos, float* sin) {
  const float pos = static_cast<float>(position);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const float angle = pos * inv_freq[i];
    cos[i] = std::cos(angle);
    sin[i] = std::sin(angle);
  }
}

void ApplyRotaryToHead(float* x, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i];
    const float b = x[i + half];
    // x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i] + a * sin[i];
  }
}

}  // namespace strata::model
