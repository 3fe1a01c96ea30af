#include "kernels/reference/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

namespace strata::kernels::reference {
namespace {

uint32_t Bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

}  // namespace

int32_t Sample(const float* logits, int64_t vocab, const SamplingParams& p) {
  if (vocab <= 0) return -1;
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  if (p.temperature <= 0.0f || p.top_k == 1) return static_cast<int32_t>(best);
  const float max_logit = logits[best];
  std::vector<float> w(vocab);
  for (int64_t i = 0; i < vocab; ++i) w[i] = std::exp((logits[i] - max_logit) / p.temperature);

  // Non-negative floats order like their bit patterns.
  uint32_t tau = 0;
  if (p.top_k > 0 && p.top_k < vocab) {
    std::vector<float> sorted = w;
    std::nth_element(sorted.begin(), sorted.begin() + (p.top_k - 1), sorted.end(),
                     std::greater<float>());
    tau = Bits(sorted[p.top_k - 1]);
  }
  if (p.top_p < 1.0f) {
    std::vector<float> kept;
    float mass = 0.0f;
    for (int64_t i = 0; i < vocab; ++i) {
      if (Bits(w[i]) >= tau) {
        kept.push_back(w[i]);
        mass += w[i];
      }
    }
    std::sort(kept.begin(), kept.end(), std::greater<float>());
    const float need = p.top_p * mass;
    float cum = 0.0f;
    for (size_t i = 0; i < kept.size(); ++i) {
      cum += kept[i];
      const bool edge = i + 1 == kept.size() || kept[i + 1] != kept[i];
      if (cum >= need && edge) {
        tau = std::max(tau, Bits(kept[i]));
        break;
      }
    }
  }
  float mass = 0.0f;
  int64_t last = best;
  for (int64_t i = 0; i < vocab; ++i) {
    if (Bits(w[i]) >= tau) {
      mass += w[i];
      last = i;
    }
  }
  const float target = SampleUniform(p.seed, p.step) * mass;
  float cum = 0.0f;
  for (int64_t i = 0; i < vocab; ++i) {
    if (Bits(w[i]) < tau) continue;
    cum += w[i];
    if (cum > target) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last);
}

}  // namespace strata::kernels::reference
