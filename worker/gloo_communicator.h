// The communicator of CPU workers: Gloo over TCP among the ranks of one
// stage. The ranks meet through a rendezvous store (TcpStoreServer on rank 0,
// worker/tcp_store.h); each rank's TCP device binds to its own host address.
// Collectives time out (a dead peer is an UNAVAILABLE status, not a hang) and
// Gloo's exceptions never leave this module.
#ifndef STRATA_WORKER_GLOO_COMMUNICATOR_H_
#define STRATA_WORKER_GLOO_COMMUNICATOR_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/communicator.h"

namespace gloo {
class Context;
namespace rendezvous {
class Store;
}
}  // namespace gloo

namespace strata::worker {

class GlooCommunicator : public Communicator {
 public:
  // Joins as `rank` of `size` through `store`, binding to `host` (this
  // rank's address, reachable by the other ranks). `prefix` names the group
  // (one stage of one pipeline) inside the store. Fails after `timeout` when
  // a rank does not come.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(gloo::rendezvous::Store* store,
                                                                  const std::string& prefix,
                                                                  const std::string& host, int rank,
                                                                  int size, std::chrono::milliseconds timeout);
  ~GlooCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(float* data, int64_t n) override;
  absl::Status AllGather(const float* in, int64_t n, float* out) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }  // collectives are synchronous

 private:
  GlooCommunicator(std::shared_ptr<gloo::Context> context, int rank, int size,
                   std::chrono::milliseconds timeout);

  std::shared_ptr<gloo::Context> context_;
  int rank_, size_;
  std::chrono::milliseconds timeout_;
  uint32_t tag_ = 0;
};

// The communicator of a stage with one rank: all-reduce is the identity and
// all-gather a copy. Host memory only (CPU backends and tests).
class SingleRankCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllReduceSum(float*, int64_t) override { return absl::OkStatus(); }
  absl::Status AllGather(const float* in, int64_t n, float* out) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_GLOO_COMMUNICATOR_H_
