#include "kernels/cpu/thread_pool.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>

namespace strata::kernels {
namespace {

// How long a thread spins for the next op (or for its peers to finish)
// before it sleeps.
constexpr std::chrono::microseconds kSpin(200);

template <typename Pred>
bool SpinUntil(Pred pred) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (pred()) return true;
    _mm_pause();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return false;
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < std::max(threads, 1); ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    published_stop_.store(true, std::memory_order_release);
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
      published_done_.store(done_chunks_, std::memory_order_release);
    }
  };
  {
    absl::MutexLock lock(&mu_);
    job_ = &fn;
    job_n_ = n;
    chunks_ = chunks;
    next_chunk_ = 0;
    done_chunks_ = 0;
    published_done_.store(0, std::memory_order_release);
    ++generation_;
    published_generation_.store(generation_, std::memory_order_release);
  }
  run_chunks();
  SpinUntil([&] { return published_done_.load(std::memory_order_acquire) == chunks; });
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](ThreadPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return p->done_chunks_ == p->chunks_; },
      this));
  job_ = nullptr;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t)>* fn = nullptr;
    int64_t n = 0, chunks = 0, c = 0;
    // The next op usually comes within microseconds: spin before sleeping.
    SpinUntil([&] {
      return published_stop_.load(std::memory_order_acquire) ||
             published_generation_.load(std::memory_order_acquire) != seen;
    });
    {
      absl::MutexLock lock(&mu_);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || generation_ != seen; };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      if (job_ == nullptr || next_chunk_ >= chunks_) {
        seen = generation_;  // the caller took every chunk of this op
        continue;
      }
      fn = job_;
      n = job_n_;
      chunks = chunks_;
      c = next_chunk_++;
      if (next_chunk_ >= chunks_) seen = generation_;
    }
    (*fn)(n * c / chunks, n * (c + 1) / chunks);
    absl::MutexLock lock(&mu_);
    ++done_chunks_;
    published_done_.store(done_chunks_, std::memory_order_release);
  }
}

}  // namespace strata::kernels
