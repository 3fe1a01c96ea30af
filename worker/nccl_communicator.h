// The NCCL communicator of CUDA workers. The router creates one unique id
// per stage (NewNcclUniqueId) and hands it to every rank of that stage
// through the control plane; each rank then joins with its rank and the
// stage's TP size. Collectives are queued on the backend's stream, so they
// order with the kernels around them without a host sync.
#ifndef STRATA_WORKER_NCCL_COMMUNICATOR_H_
#define STRATA_WORKER_NCCL_COMMUNICATOR_H_

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/communicator.h"

namespace strata::worker {

// ncclUniqueId as bytes (NCCL_UNIQUE_ID_BYTES long).
absl::StatusOr<std::string> NewNcclUniqueId();

class NcclCommunicator : public Communicator {
 public:
  // Joins the communicator named by `unique_id` as `rank` of `size` on the
  // current CUDA device. Blocks until every rank has joined, or fails after
  // `timeout_ms` (a rank that never comes must not hang the worker).
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(const std::string& unique_id, int rank,
                                                                  int size, cudaStream_t stream,
                                                                  int timeout_ms = 60000);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(float* data, int64_t n) override;
  absl::Status AllGather(const float* in, int64_t n, float* out) override;
  absl::Status Synchronize() override;

 private:
  NcclCommunicator(ncclComm_t comm, int rank, int size, cudaStream_t stream)
      : comm_(comm), rank_(rank), size_(size), stream_(stream) {}
  absl::Status CheckAsync();

  ncclComm_t comm_;
  int rank_, size_;
  cudaStream_t stream_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_NCCL_COMMUNICATOR_H_
