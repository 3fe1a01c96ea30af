// Runs blocking work (connects, control-plane calls) off the threads that
// must stay responsive: tasks posted under one key run one at a time, in
// order; tasks of different keys run at once on up to `max_threads`
// threads, started as needed. The dispatcher keys its warm-up work by
// replica, so a replica whose stage 0 does not answer delays only itself.
//
// Thread-safe. The destructor runs no task that has not started and waits
// for the running ones (each must bound its own time).
#ifndef STRATA_ROUTER_KEYED_RUNNER_H_
#define STRATA_ROUTER_KEYED_RUNNER_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace strata::router {

class KeyedRunner {
 public:
  explicit KeyedRunner(int max_threads);
  ~KeyedRunner();
  KeyedRunner(const KeyedRunner&) = delete;
  KeyedRunner& operator=(const KeyedRunner&) = delete;

  void Post(const std::string& key, std::function<void()> task);
  // Tasks posted and not yet finished (tests).
  int pending() const;

 private:
  void Work();

  const int max_threads_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::deque<std::function<void()>>> queues_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> running_ ABSL_GUARDED_BY(mu_);  // keys with a task on a thread
  std::deque<std::string> ready_ ABSL_GUARDED_BY(mu_);  // keys with tasks, none running, in posting order
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  int idle_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_KEYED_RUNNER_H_
