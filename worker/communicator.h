// Collectives among the tensor-parallel ranks of one pipeline stage: the
// all-reduce after o_proj and down_proj, and the gather of the vocab-parallel
// lm_head. Pointers are in the backend's memory (host for CPU workers with
// Gloo, device for CUDA workers with NCCL). Every rank of a stage calls the
// same collectives in the same order.
#ifndef STRATA_WORKER_COMMUNICATOR_H_
#define STRATA_WORKER_COMMUNICATOR_H_

#include <cstdint>

#include "absl/status/status.h"

namespace strata::worker {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // data[0, n) = the sum over ranks of every rank's data[0, n), in place.
  virtual absl::Status AllReduceSum(float* data, int64_t n) = 0;
  // out[r * n, (r + 1) * n) = rank r's in[0, n), for every rank r.
  virtual absl::Status AllGather(const float* in, int64_t n, float* out) = 0;
  // Waits for the collectives queued so far and reports a failed peer.
  virtual absl::Status Synchronize() = 0;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_COMMUNICATOR_H_
