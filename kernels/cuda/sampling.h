// Token sampling on the GPU, one thread block per row, with the semantics of
// kernels/reference/sampling.h: greedy argmax, or temperature with top-k and
// top-p found by an exact bitwise search over the probabilities (no sort),
// then an inverse-CDF draw in id order from SampleUniform(seed, step); and
// the log-probabilities and top-n that go with the draw.
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

// Backend::Sample's log-probabilities, one thread block per row, with the
// semantics of kernels/reference/sampling.h's SampleRow: the row's max, its
// exp-sum in double, the drawn token's and the target's log-probabilities,
// and the top n by n rounds of a block-wide max over (logit, -id) keys.
// logits: device [rows, vocab]; requests: device [rows] (valid, as
// ValidateSampleRequests checks); tokens: device [rows], the ids
// LaunchSample drew, read for the rows that sample; results: device [rows],
// every field written.
cudaError_t LaunchScore(const float* logits, int64_t rows, int64_t vocab, const SampleRequest* requests,
                        const int32_t* tokens, SampleResult* results, cudaStream_t stream);

}  // namespace strata::kernels::cuda

#endif  // STRATA_KERNELS_CUDA_SAMPLING_H_
