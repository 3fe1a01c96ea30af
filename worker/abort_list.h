// Which arriving steps a worker drops: every step up to the highest step id
// an Abort named, and every step that carries an aborted sequence. The
// control service writes it, the data loop reads it. Thread-safe.
#ifndef STRATA_WORKER_ABORT_LIST_H_
#define STRATA_WORKER_ABORT_LIST_H_

#include <cstdint>
#include <mutex>
#include <set>

#include "transport/transport.h"

namespace strata::worker {

class AbortList {
 public:
  // Most sequence ids one list keeps; past it the oldest record is cleared.
  static constexpr size_t kMaxSequences = 1000000;

  template <typename Ids>
  void Add(uint64_t up_to_step_id, const Ids& sequence_ids) {
    std::lock_guard<std::mutex> lock(mu_);
    if (up_to_step_id > up_to_) up_to_ = up_to_step_id;
    if (sequences_.size() > kMaxSequences) sequences_.clear();
    sequences_.insert(sequence_ids.begin(), sequence_ids.end());
  }
  // Whether `message` (a StepPlan or Activations) must be dropped.
  bool Drops(const transport::Message& message) const;

 private:
  mutable std::mutex mu_;
  uint64_t up_to_ = 0;
  std::set<uint64_t> sequences_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_ABORT_LIST_H_
