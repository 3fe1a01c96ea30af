#include "kernels/cpu/thread_pool.h"

#include <algorithm>

namespace strata::kernels {

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < std::max(threads, 1); ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = std::min<int64_t>(threads(), (n + grain - 1) / grain);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  auto run_chunks = [&] {
    for (;;) {
      int64_t c;
      {
        absl::MutexLock lock(&mu_);
        if (next_chunk_ >= chunks_) return;
        c = next_chunk_++;
      }
      fn(n * c / chunks, n * (c + 1) / chunks);
      absl::MutexLock lock(&mu_);
      ++done_chunks_;
    }
  };
  {
    absl::MutexLock lock(&mu_);
    job_ = &fn;
    job_n_ = n;
    chunks_ = chunks;
    next_chunk_ = 0;
    done_chunks_ = 0;
    ++generation_;
  }
  run_chunks();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](ThreadPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return p->done_chunks_ == p->chunks_; },
      this));
  job_ = nullptr;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t)>* fn;
    int64_t n, chunks, c;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || (job_ != nullptr && generation_ != seen && next_chunk_ < chunks_);
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      fn = job_;
      n = job_n_;
      chunks = chunks_;
      c = next_chunk_++;
      if (next_chunk_ >= chunks_) seen = generation_;
    }
    (*fn)(n * c / chunks, n * (c + 1) / chunks);
    absl::MutexLock lock(&mu_);
    ++done_chunks_;
  }
}

}  // namespace strata::kernels
