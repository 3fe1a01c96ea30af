// Token sampling on the GPU, one thread block per row, with the semantics of
// kernels/reference/sampling.h: greedy argmax, or temperature with top-k and
// top-p found by an exact bitwise search over the probabilities (no sort),
// then an inverse-CDF draw in id order from SampleUniform(seed, step).
#ifndef STRATA_KERNELS_CUDA_SAMPLING_H_
#define STRATA_KERNELS_CUDA_SAMPLING_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/sampling_params.h"

namespace strata::kernels::cuda {

// logits: device [rows, vocab]; params: device [rows]; scratch: device
// [rows, vocab] floats; out_ids: device [rows].
cudaError_t LaunchSample(const float* logits, int64_t rows, int64_t vocab,
                         const SamplingParams* params, float* scratch, int32_t* out_ids,
                         cudaStream_t stream);

}  // namespace strata::kernels::cuda

#endif  // STRATA_KERNELS_CUDA_SAMPLING_H_
