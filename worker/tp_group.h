// The tensor-parallel group of one pipeline stage: rank 0 serves the
// rendezvous store for the life of the process, and the ranks form their
// communicator (NCCL where the backend computes on a device stream, Gloo on
// host memory, none for a single rank) once per pipeline epoch: the data
// loop calls Form when the first step of a new epoch arrives, which every
// rank of the stage receives in the same order, so all ranks re-form at the
// same step boundary. A new epoch's group meets under its own name in the
// store, so a restarted rank never reads an earlier epoch's addresses, and
// the old communicator (and every connection of it) is gone before the new
// one forms, so no collective of one epoch can meet one of another.
//
// The communicator is wrapped: the wrapper outlives every epoch's group (the
// stage executor holds it), adds up the time spent in collectives, and once
// a collective fails it fails every later one at once, without touching the
// peers, until the next Form: a rank that lost its peer mid-step must not
// start the next step's collectives against a peer still in the old one.
#ifndef STRATA_WORKER_TP_GROUP_H_
#define STRATA_WORKER_TP_GROUP_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/stage_place.h"
#include "worker/communicator.h"
#include "transport/address.h"
#include "worker/tcp_store.h"

namespace strata::worker {

// Forwards to the current epoch's communicator; see above. One thread (the
// data loop's) calls it.
class TimedCommunicator : public Communicator {
 public:
  TimedCommunicator(int rank, int size) : rank_(rank), size_(size) {}
  // Test form: `inner` in place from the start.
  explicit TimedCommunicator(std::unique_ptr<Communicator> inner);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // UNAVAILABLE without a group, or after a failure in this one (naming it).
  absl::Status AllReduceSum(float* data, int64_t n) override;
  absl::Status AllGather(const float* in, int64_t n, float* out) override;
  // The current communicator's answer (false without one).
  bool gathers_columns_to_root() const override { return inner_ && inner_->gathers_columns_to_root(); }
  absl::Status GatherColumnsToRoot(const float* in, int64_t rows, int64_t cols, float* out) override;
  absl::Status Synchronize() override;
  // Seconds spent in collectives since the last call.
  double TakeSeconds() { return std::exchange(seconds_, 0.0); }

  // Drops the current communicator (null: none until the next Install).
  void Install(std::unique_ptr<Communicator> inner, std::string why_none = "");
  bool failed() const { return !failure_.ok(); }

 private:
  template <typename F>
  absl::Status Call(F&& f);

  int rank_, size_;
  std::unique_ptr<Communicator> inner_;
  absl::Status failure_;  // the first failure of this group; OK while none
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
  // The group of `place`'s stage: rank 0 starts serving the store now; no
  // communicator until Form. `backend` must outlive the group.
  static absl::StatusOr<std::unique_ptr<TpGroup>> Create(const model::StagePlace& place, kernels::Backend* backend,
                                                         const TpGroupOptions& options);

  // Forms the group of pipeline epoch `epoch` (the old one dropped first):
  // every rank of the stage must call it with the same epoch; fails after
  // the timeout when one does not come (the communicator then has no group
  // and its collectives fail until the next Form). Nothing for one rank.
  absl::Status Form(uint64_t epoch);

  // Null for a single rank; the same object across epochs.
  TimedCommunicator* communicator() { return comm_.get(); }
  int size() const { return place_.tp_size(); }

 private:
  TpGroup(const model::StagePlace& place, kernels::Backend* backend, const TpGroupOptions& options,
          transport::HostPort store)
      : place_(place), backend_(backend), options_(options), store_address_(std::move(store)) {}
  absl::StatusOr<std::unique_ptr<Communicator>> Meet(uint64_t epoch);

  const model::StagePlace place_;
  kernels::Backend* backend_;
  const TpGroupOptions options_;
  const transport::HostPort store_address_;  // options_.store, parsed once
  std::unique_ptr<TcpStoreServer> store_server_;
  std::unique_ptr<TcpStoreClient> store_;  // this epoch's connection to the store
  std::unique_ptr<TimedCommunicator> comm_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_TP_GROUP_H_
