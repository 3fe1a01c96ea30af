#include "router/keyed_runner.h"

#include <algorithm>

namespace strata::router {

KeyedRunner::KeyedRunner(int max_threads) : max_threads_(std::max(1, max_threads)) {}

KeyedRunner::~KeyedRunner() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (std::thread& t : threads) t.join();
}

void KeyedRunner::Post(const std::string& key, std::function<void()> task) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return;
  std::deque<std::function<void()>>& q = queues_[key];
  q.push_back(std::move(task));
  pending_++;
  if (q.size() == 1 && !running_.count(key)) ready_.push_back(key);
  // Every ready key needs a thread of its own: an idle one, woken, or a
  // new one (an idle thread already woken for another key does not count).
  cv_.notify_one();
  if (static_cast<int>(ready_.size()) > idle_ && static_cast<int>(threads_.size()) < max_threads_) {
    threads_.emplace_back([this] { Work(); });
  }
}

int KeyedRunner::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_;
}

void KeyedRunner::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    idle_++;
    cv_.wait(lock, [&] { return stop_ || !ready_.empty(); });
    idle_--;
    if (stop_) return;
    const std::string key = ready_.front();
    ready_.pop_front();
    std::deque<std::function<void()>>& q = queues_[key];
    std::function<void()> task = std::move(q.front());
    q.pop_front();
    running_.insert(key);
    lock.unlock();
    task();
    lock.lock();
    running_.erase(key);
    pending_--;
    if (auto it = queues_.find(key); it->second.empty()) {
      queues_.erase(it);
    } else {
      ready_.push_back(key);
      cv_.notify_one();
    }
  }
}

}  // namespace strata::router
