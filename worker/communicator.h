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
  // Whether GatherColumnsToRoot runs here; the same answer on every rank of
  // a group (where it is false, callers use AllGather).
  virtual bool gathers_columns_to_root() const { return false; }
  // Each rank's rows x cols side by side as the columns of rank 0's result:
  // rank 0's out[i * size() * cols + r * cols + j] = rank r's
  // in[i * cols + j] for i < rows, j < cols. No other rank receives
  // anything (their `out` may be null), and rank 0 gets the rows laid out,
  // so the vocab-parallel logits cost one copy instead of an all-gather and
  // a relayout. UNIMPLEMENTED where gathers_columns_to_root() is false.
  virtual absl::Status GatherColumnsToRoot(const float* in, int64_t rows, int64_t cols, float* out) {
    (void)in, (void)rows, (void)cols, (void)out;
    return absl::UnimplementedError("this communicator has no gather to rank 0; use AllGather");
  }
  // Waits for the collectives queued so far and reports a failed peer.
  virtual absl::Status Synchronize() = 0;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_COMMUNICATOR_H_
