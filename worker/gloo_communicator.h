// The communicator of CPU workers: Gloo over TCP among the ranks of one
// stage. The ranks meet through a rendezvous store (TcpStoreServer on rank 0,
// worker/tcp_store.h); each rank's TCP device binds to its own host address.
// Collectives time out (a dead peer is an UNAVAILABLE status, not a hang) and
// Gloo's exceptions never leave this module; once one fails, every later one
// fails at once (the group is re-formed at the next epoch).
//
// On one host (the usual case for CPU tensor parallelism, one rank per
// socket or per core group) every collective goes through shared memory
// (worker/shm_exchange.h); the rest of this comment is the TCP path, for
// ranks on different hosts.
//
// All-reduce: at decode sizes (up to kDirectMaxBytes sent per rank) each rank
// writes its whole buffer straight into every peer's inbox, pre-registered
// Gloo buffers kept for the life of the group, and every rank adds the
// contributions in rank order, so all ranks end bitwise equal. Two inboxes
// per peer alternate between calls: a rank can only be one call ahead of a
// peer, so it never writes an inbox the peer is still reading, and no
// "ready" message is needed. The exchange has its own connections in Gloo's
// synchronous mode: the caller writes and reads the sockets itself, so a
// message wakes only the waiting thread (Gloo's device thread handed every
// message on, a second wake-up, and took 12% of a core at decode on 2 TP
// ranks: docs/benchmarks.md). Larger buffers take Gloo's ring (reduce-scatter
// then all-gather), which sends each byte once, on the group's other,
// asynchronous connections. All-gather goes through the same inboxes in
// windows of their size (then copied out).
#ifndef STRATA_WORKER_GLOO_COMMUNICATOR_H_
#define STRATA_WORKER_GLOO_COMMUNICATOR_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/communicator.h"
#include "worker/shm_exchange.h"

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
  // that takes the direct exchange (Gloo's ring, the only path above it,
  // had 4 ms tails at 1-2 MiB where this had 2 ms or less: docs/benchmarks.md).
  static constexpr int64_t kDirectMaxBytes = 4 << 20;
  // The inboxes' room: kInboxBytes / (size - 1) per peer and parity, also
  // the all-gather's window.
  static constexpr int64_t kInboxBytes = kDirectMaxBytes;
  // The direct exchange's blocking writes go in pieces, one per connection
  // in flight: a piece must fit the socket buffers while the peer writes
  // too, or both would wait in write() for each other. Gloo asks for a send
  // buffer of the message's size, which Linux caps at net.core.wmem_max and
  // then doubles, so a piece of half that cap always fits (64 KiB to 1 MiB;
  // the default cap of 208 KiB gives 104 KiB).
  static size_t SyncPieceBytes();

  // Joins as `rank` of `size` through `store`, binding to `host` (this
  // rank's address, reachable by the other ranks). `prefix` names the group
  // (one stage of one pipeline) inside the store. Fails after `timeout` when
  // a rank does not come. With `shared_memory`, ranks that can all map one
  // segment (one host) run every collective through it (ShmExchange);
  // otherwise, or without it, over TCP as below.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(gloo::rendezvous::Store* store,
                                                                  const std::string& prefix,
                                                                  const std::string& host, int rank,
                                                                  int size, std::chrono::milliseconds timeout,
                                                                  bool shared_memory = true);
  ~GlooCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(float* data, int64_t n) override;
  absl::Status AllGather(const float* in, int64_t n, float* out) override;
  // Through shared memory only (or with one rank); TCP groups use AllGather.
  bool gathers_columns_to_root() const override { return size_ == 1 || shm_ != nullptr; }
  absl::Status GatherColumnsToRoot(const float* in, int64_t rows, int64_t cols, float* out) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }  // collectives are synchronous
  // Whether the collectives go through shared memory.
  bool uses_shared_memory() const { return shm_ != nullptr; }

 private:
  // Sends `bytes` of `data` to every peer's inbox of parity k and waits for
  // every peer's, in pieces; throws Gloo's exceptions.
  void Exchange(const float* data, size_t bytes, int k);
  void DirectAllGather(const float* in, int64_t n, float* out);
  GlooCommunicator(std::shared_ptr<gloo::Context> context, std::shared_ptr<gloo::Context> direct,
                   std::unique_ptr<ShmExchange> shm, int rank, int size, std::chrono::milliseconds timeout);
  // Throws Gloo's exceptions; the callers catch them.
  void DirectAllReduce(float* data, int64_t n);
  void RingAllReduce(float* data, int64_t n);
  // Registers the inboxes, at the first direct collective (every rank's).
  void RegisterInboxes();
  absl::Status Failed(absl::Status s);

  // Declared first: they outlive the buffers on their pairs.
  std::shared_ptr<gloo::Context> context_;  // asynchronous: the ring, the all-gather
  std::shared_ptr<gloo::Context> direct_;   // synchronous: the direct exchange (none with shm_)
  std::unique_ptr<ShmExchange> shm_;         // every collective, when the ranks share a host
  int rank_, size_;
  std::chrono::milliseconds timeout_;
  std::vector<const float*> parts_;  // every rank's part of a direct all-reduce (no allocation per call)
  uint32_t tag_ = 0;
  absl::Status failure_;  // the first failed collective; OK while none

  // The direct exchange. inbox_memory_: [2 parities][size - 1 peers][capacity].
  int64_t inbox_capacity_ = 0;  // floats per inbox; 0: none yet
  int inbox_slot_ = 0;          // the first of the inboxes' Gloo slots
  std::vector<float> inbox_memory_;
  std::vector<std::unique_ptr<gloo::transport::Buffer>> inboxes_;  // [parity][peer], registered
  uint64_t direct_calls_ = 0;   // the parity of the next call
};

// The communicator of a stage with one rank: all-reduce is the identity and
// all-gather a copy. Host memory only (CPU backends and tests).
class SingleRankCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllReduceSum(float*, int64_t) override { return absl::OkStatus(); }
  absl::Status AllGather(const float* in, int64_t n, float* out) override;
  bool gathers_columns_to_root() const override { return true; }
  absl::Status GatherColumnsToRoot(const float* in, int64_t rows, int64_t cols, float* out) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_GLOO_COMMUNICATOR_H_
