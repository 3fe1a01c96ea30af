// Per-sequence sampling parameters and the counter-based random draw shared
// by every backend's sampler, so a seeded request samples the same token on
// the CPU and the GPU, alone or in any batch: the draw depends only on
// (seed, step), never on the batch or the thread count.
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
