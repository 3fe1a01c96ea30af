#include "kernels/reference/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
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

RowLogSoftmax LogSoftmaxOf(const float* row, int64_t n) {
  RowLogSoftmax r;
  r.max = *std::max_element(row, row + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(row[i] - r.max));
  r.log_sum = static_cast<float>(std::log(sum));
  return r;
}

SampleResult SampleRow(const float* row, int64_t vocab, const SampleRequest& request) {
  SampleResult r;
  if (request.sample) r.token = Sample(row, vocab, request.params);
  const bool logprob = request.sample && request.logprobs >= 0;
  if (!logprob && request.target < 0) return r;
  const RowLogSoftmax ls = LogSoftmaxOf(row, vocab);
  if (request.target >= 0) r.target_logprob = ls.At(row[request.target]);
  if (!logprob) return r;
  r.logprob = ls.At(row[r.token]);
  if (request.logprobs == 0) return r;
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  const int64_t n = std::min<int64_t>(request.logprobs, vocab);
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
    return row[a] > row[b] || (row[a] == row[b] && a < b);
  });
  for (int64_t k = 0; k < n; ++k) r.top[k] = {ids[k], ls.At(row[ids[k]])};
  r.num_top = static_cast<int32_t>(n);
  return r;
}

}  // namespace strata::kernels::reference
