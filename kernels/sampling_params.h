// Per-sequence sampling parameters, the counter-based random draw shared by
// every backend's sampler, and the per-row request and result of
// Backend::Sample. The draw is shared so that a seeded request samples the
// same token on the CPU and the GPU, alone or in any batch: it depends only
// on (seed, step), never on the batch or the thread count. Everything here
// is plain data that CUDA kernels read and write too.
#ifndef STRATA_KERNELS_SAMPLING_PARAMS_H_
#define STRATA_KERNELS_SAMPLING_PARAMS_H_

#include <cstdint>

#ifdef __CUDACC__
#define STRATA_HOST_DEVICE __host__ __device__
#else
#define STRATA_HOST_DEVICE
#endif

namespace strata::kernels {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;         // 0: off; ties with the k-th probability are kept
  float top_p = 1.0f;        // (0, 1]; 1: off
  uint64_t seed = 0;
  uint64_t step = 0;         // tokens generated so far for this sequence
};

// The most top log-probabilities one row may ask for (the public API's limit).
constexpr int32_t kMaxTopLogprobs = 20;

// What the last stage asks of one logits row (Backend::Sample).
struct SampleRequest {
  bool sample = false;     // draw `SampleResult::token` with `params`
  SamplingParams params;   // read only when `sample`
  // Read only when `sample`: -1: no log-probabilities; 0: the drawn token's;
  // n in [1, kMaxTopLogprobs]: also the n most likely tokens'.
  int32_t logprobs = -1;
  // -1: none; else a token id in [0, vocab) whose log-probability to report
  // (prompt scoring: the token that follows this row).
  int32_t target = -1;
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// One row's answer: plain data of a fixed size, so a device backend fills an
// array of them and copies it back in one transfer. Log-probabilities are
// log softmax(logits) at temperature 1, whatever `params` says.
struct SampleResult {
  int32_t token = -1;           // when `sample`
  float logprob = 0.0f;         // log p(token), when logprobs >= 0
  float target_logprob = 0.0f;  // log p(target), when target >= 0
  int32_t num_top = 0;          // min(logprobs, vocab) when logprobs > 0, else 0
  // top[0, num_top): the most likely tokens, best first, the lower id first
  // on equal logits.
  TokenLogprob top[kMaxTopLogprobs];
};

// splitmix64 of (seed, step): one uniform draw in [0, 1) with 24 bits.
STRATA_HOST_DEVICE inline float SampleUniform(uint64_t seed, uint64_t step) {
  uint64_t z = seed + (step + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z = z ^ (z >> 31);
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_SAMPLING_PARAMS_H_
