// Notices, for every request in flight, that its caller went away (a
// cancelled gRPC call, an HTTP client that hung up, a deadline that
// passed) with one thread, so a front end's thread can sleep on its
// request's stream until output comes or the watch wakes it. Asking on a
// short timer from every front-end thread instead cost a wake-up per stream
// per period: at 128 streams and 50 ms, 2,560 wake-ups a second, 5% of a
// 2-core machine that the workers needed (docs/benchmarks.md, 2026-12-03).
//
// Each watched call has a predicate (`gone`), asked on the watch's thread
// while it is registered, and a `wake` called once, the first time `gone`
// says true. Both run on the watch's thread with its lock held: they must
// be quick, thread-safe against the front end, and must not call back into
// the watch. Thread-safe.
//
// The watch asks at most `asks_per_period` predicates a period, taking the
// calls in turn: with N calls watched, each is asked every period x
// ceil(N / asks_per_period) (50 ms up to 32 calls, 200 ms at 128). A gRPC
// IsCancelled costs a completion-queue pluck on the call's queue (futex
// wake-ups): asked for 128 streams every 50 ms, the watch's thread took
// 2.7% of a 2-core machine's samples under load (docs/benchmarks.md,
// 2026-12-03, continued).
#ifndef STRATA_ROUTER_GONE_WATCH_H_
#define STRATA_ROUTER_GONE_WATCH_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"

namespace strata::router {

class GoneWatch {
 public:
  // How often each predicate is asked: the most a caller's going away
  // waits to be noticed.
  static constexpr std::chrono::milliseconds kDefaultPeriod{50};
  static constexpr int kDefaultAsksPerPeriod = 32;

  // asks_per_period below 1 counts as 1.
  explicit GoneWatch(std::chrono::milliseconds period = kDefaultPeriod,
                     int asks_per_period = kDefaultAsksPerPeriod);
  ~GoneWatch();  // joins the thread; every Handle must be gone before
  GoneWatch(const GoneWatch&) = delete;
  GoneWatch& operator=(const GoneWatch&) = delete;

  // A registration: ends (and is never asked again) when destroyed or
  // reset; once Reset or the destructor returns, neither function runs.
  class Handle {
   public:
    Handle() = default;
    Handle(Handle&& other) noexcept;
    Handle& operator=(Handle&& other) noexcept;
    ~Handle() { Reset(); }
    void Reset();
    bool active() const { return watch_ != nullptr; }

   private:
    friend class GoneWatch;
    Handle(GoneWatch* watch, uint64_t id) : watch_(watch), id_(id) {}
    GoneWatch* watch_ = nullptr;
    uint64_t id_ = 0;
  };

  Handle Watch(std::function<bool()> gone, std::function<void()> wake);
  // Calls watched now (tests).
  int watched() const;
  std::chrono::milliseconds period() const { return period_; }
  int asks_per_period() const { return asks_per_period_; }

 private:
  struct Entry {
    std::function<bool()> gone;
    std::function<void()> wake;
    bool woken = false;
  };
  void Remove(uint64_t id);
  void Loop();

  const std::chrono::milliseconds period_;
  const int asks_per_period_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_ask_ ABSL_GUARDED_BY(mu_) = 0;  // the id the next period starts at (or the next above)
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_GONE_WATCH_H_
