// The tensor-parallel group of one pipeline stage: rank 0 serves the
// rendezvous store, every rank joins it, and the ranks build their
// communicator: NCCL where the backend computes on a device stream, Gloo on
// host memory, none for a single rank. The communicator is wrapped so the
// data loop can tell how long each step spent in collectives.
#ifndef STRATA_WORKER_TP_GROUP_H_
#define STRATA_WORKER_TP_GROUP_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/stage_place.h"
#include "worker/communicator.h"
#include "worker/tcp_store.h"

namespace strata::worker {

// Forwards to another communicator and adds up the host time spent in it.
class TimedCommunicator : public Communicator {
 public:
  explicit TimedCommunicator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  absl::Status AllReduceSum(float* data, int64_t n) override;
  absl::Status AllGather(const float* in, int64_t n, float* out) override;
  absl::Status Synchronize() override;
  // Seconds spent in collectives since the last call (one thread: the data loop's).
  double TakeSeconds() { return std::exchange(seconds_, 0.0); }

 private:
  std::unique_ptr<Communicator> inner_;
  double seconds_ = 0;
};

struct TpGroupOptions {
  std::string pipeline;   // names the group in the store
  std::string host;       // the address Gloo listens on
  std::string store;      // HOST:PORT of the rendezvous store (rank 0 serves it)
  std::chrono::milliseconds timeout{30000};  // collectives and the rendezvous
  const base::TlsMaterial* tls = nullptr;    // mutual TLS on the store (the control plane's); null: plaintext
};

class TpGroup {
 public:
  // Joins the group of `place`'s stage; a single rank needs no store.
  // `backend` must outlive the group.
  static absl::StatusOr<std::unique_ptr<TpGroup>> Join(const model::StagePlace& place, kernels::Backend* backend,
                                                       const TpGroupOptions& options);

  // Null for a single rank.
  TimedCommunicator* communicator() { return comm_.get(); }

 private:
  TpGroup() = default;
  std::unique_ptr<TcpStoreServer> store_server_;
  std::unique_ptr<TcpStoreClient> store_;
  std::unique_ptr<TimedCommunicator> comm_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_TP_GROUP_H_
