#include "router/gone_watch.h"

#include <algorithm>
#include <utility>

namespace strata::router {

GoneWatch::GoneWatch(std::chrono::milliseconds period, int asks_per_period)
    : period_(period), asks_per_period_(std::max(1, asks_per_period)), thread_([this] { Loop(); }) {}

GoneWatch::~GoneWatch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

GoneWatch::Handle::Handle(Handle&& other) noexcept : watch_(other.watch_), id_(other.id_) {
  other.watch_ = nullptr;
}

GoneWatch::Handle& GoneWatch::Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    Reset();
    watch_ = std::exchange(other.watch_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

void GoneWatch::Handle::Reset() {
  if (watch_ == nullptr) return;
  watch_->Remove(id_);
  watch_ = nullptr;
}

GoneWatch::Handle GoneWatch::Watch(std::function<bool()> gone, std::function<void()> wake) {
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
    entries_.emplace(id, Entry{std::move(gone), std::move(wake)});
  }
  cv_.notify_all();  // the thread sleeps without a deadline while nothing is watched
  return Handle(this, id);
}

void GoneWatch::Remove(uint64_t id) {
  // The functions run under mu_, so once this holds it none is running.
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(id);
}

int GoneWatch::watched() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(entries_.size());
}

void GoneWatch::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !entries_.empty(); });
    if (stop_) return;
    cv_.wait_for(lock, period_, [&] { return stop_; });
    if (stop_) return;
    // Up to asks_per_period_ calls not yet woken, from where the last
    // period stopped, wrapping around once.
    int asked = 0;
    auto it = entries_.lower_bound(next_ask_);
    for (size_t seen = 0; seen < entries_.size() && asked < asks_per_period_; ++seen, ++it) {
      if (it == entries_.end()) it = entries_.begin();
      Entry& e = it->second;
      next_ask_ = it->first + 1;
      if (e.woken) continue;
      ++asked;
      if (!e.gone()) continue;
      e.woken = true;
      e.wake();
    }
  }
}

}  // namespace strata::router
