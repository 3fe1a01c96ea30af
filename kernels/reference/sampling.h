// The plain sampler, the oracle for the GPU sampler and the CPU workers':
//   greedy (temperature 0 or top_k 1): argmax, lowest id on ties;
//   otherwise w_i = exp((logit_i - max) / temperature); keep the tokens whose
//   w is at least the k-th largest (top_k), then the fewest largest ones
//   whose mass reaches top_p of what is left (ties at the edge kept); draw
//   u = SampleUniform(seed, step) and pick, in id order, the first kept token
//   whose running mass exceeds u times the kept mass.
// And the log-probabilities and top-n of Backend::Sample.
#ifndef STRATA_KERNELS_REFERENCE_SAMPLING_H_
#define STRATA_KERNELS_REFERENCE_SAMPLING_H_

#include <cstdint>

#include "kernels/sampling_params.h"

namespace strata::kernels::reference {

int32_t Sample(const float* logits, int64_t vocab, const SamplingParams& params);

// log softmax of one row [n]: the max, and the log-sum-exp summed in double,
// computed once per row.
struct RowLogSoftmax {
  float max = 0;
  float log_sum = 0;  // log(sum(exp(x - max)))
  float At(float x) const { return x - max - log_sum; }
};
RowLogSoftmax LogSoftmaxOf(const float* row, int64_t n);

// One row [vocab] of Backend::Sample: the token from Sample, log-probabilities
// from LogSoftmaxOf, the top n by a partial sort (logit descending, id
// ascending). `request` must pass ValidateSampleRequests. The host backends
// run it per row; the CUDA backend is tested against it.
SampleResult SampleRow(const float* row, int64_t vocab, const SampleRequest& request);

}  // namespace strata::kernels::reference

#endif  // STRATA_KERNELS_REFERENCE_SAMPLING_H_
