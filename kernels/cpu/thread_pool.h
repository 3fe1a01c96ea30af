// A fixed set of worker threads shared by every op of a backend (no thread
// creation per op). ParallelFor splits [0, n) into contiguous chunks; each
// index is handled by exactly one call, so a per-index reduction order never
// depends on the thread count.
#ifndef STRATA_KERNELS_CPU_THREAD_POOL_H_
#define STRATA_KERNELS_CPU_THREAD_POOL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace strata::kernels {

class ThreadPool {
 public:
  // threads >= 1; the calling thread counts as one of them.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over chunks covering [0, n), at least `grain`
  // indexes each, and returns when all are done. Not reentrant: one
  // ParallelFor at a time per pool.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  // Published after each new job and each finished chunk, so waiting
  // threads can spin on them briefly before sleeping on the mutex: a
  // forward pass runs hundreds of parallel ops back to back, and waking a
  // sleeping thread costs tens of microseconds per op.
  std::atomic<uint64_t> published_generation_{0};
  std::atomic<int64_t> published_done_{0};
  std::atomic<bool> published_stop_{false};
  absl::Mutex mu_;
  const std::function<void(int64_t, int64_t)>* job_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t job_n_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t chunks_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_chunk_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t done_chunks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_CPU_THREAD_POOL_H_
