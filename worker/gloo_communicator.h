// The communicator of CPU workers: Gloo over TCP among the ranks of one
// stage. The ranks meet through a rendezvous store (TcpStoreServer on rank 0,
// worker/tcp_store.h); each rank's TCP device binds to its own host address.
// Collectives time out (a dead peer is an UNAVAILABLE status, not a hang) and
// Gloo's exceptions never leave this module; once one fails, every later one
// fails at once (the group is re-formed at the next epoch).
//
// All-reduce: at decode sizes (up to kDirectMaxBytes sent per rank) each rank
// writes its whole buffer straight into every peer's inbox, pre-registered
// Gloo buffers kept for the life of the group, and every rank adds the
// contributions in rank order, so all ranks end bitwise equal. Two inboxes
// per peer alternate between calls: a rank can only be one call ahead of a
// peer, so it never writes an inbox the peer is still reading, and no
// "ready" message is needed. Larger buffers take Gloo's ring (reduce-scatter
// then all-gather), which sends each byte once.
#ifndef STRATA_WORKER_GLOO_COMMUNICATOR_H_
#define STRATA_WORKER_GLOO_COMMUNICATOR_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/communicator.h"

namespace gloo {
class Context;
namespace rendezvous {
class Store;
}
namespace transport {
class Buffer;
}
}  // namespace gloo

namespace strata::worker {

class GlooCommunicator : public Communicator {
 public:
  // The largest all-reduce, in bytes each rank sends ((size - 1) * n * 4),
  // that takes the direct exchange; it bounds the inboxes to twice this.
  static constexpr int64_t kDirectMaxBytes = 4 << 20;

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
  // Throws Gloo's exceptions; the callers catch them.
  void DirectAllReduce(float* data, int64_t n);
  void RingAllReduce(float* data, int64_t n);
  // Registers inboxes of at least n floats (all ranks grow at the same call).
  void GrowInboxes(int64_t n);
  absl::Status Failed(absl::Status s);

  std::shared_ptr<gloo::Context> context_;  // declared first: outlives the buffers on its pairs
  int rank_, size_;
  std::chrono::milliseconds timeout_;
  uint32_t tag_ = 0;
  absl::Status failure_;  // the first failed collective; OK while none

  // The direct exchange. inbox_memory_: [2 parities][size - 1 peers][capacity].
  int64_t inbox_capacity_ = 0;  // floats per inbox; 0: none yet
  int inbox_slot_ = 0;          // the first of this generation's Gloo slots
  std::vector<float> inbox_memory_;
  std::vector<std::unique_ptr<gloo::transport::Buffer>> inboxes_;  // [parity][peer], registered
  uint64_t direct_calls_ = 0;   // the parity of the next call
  std::vector<std::unique_ptr<gloo::transport::Buffer>> abandoned_sends_;  // of failed calls
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
