#include "transport/buffer_pool.h"

#include <utility>

namespace strata::transport {

MessageBytes BufferPool::Take(size_t size) {
  MessageBytes out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    size_t best = kept_.size();
    for (size_t i = 0; i < kept_.size(); ++i) {
      const size_t cap = kept_[i].capacity();
      if (cap < size || cap / 4 > size) continue;
      if (best == kept_.size() || cap < kept_[best].capacity()) best = i;
    }
    if (best < kept_.size()) {
      out = std::move(kept_[best]);
      kept_[best] = std::move(kept_.back());
      kept_.pop_back();
      bytes_ -= out.capacity();
    }
  }
  out.resize(size);  // within capacity: no reallocation, no zeroing
  return out;
}

void BufferPool::Give(MessageBytes buffer) {
  const size_t cap = buffer.capacity();
  if (cap == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (kept_.size() >= max_buffers_ || bytes_ + cap > max_bytes_) return;  // freed on return
  bytes_ += cap;
  kept_.push_back(std::move(buffer));
}

size_t BufferPool::kept_buffers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return kept_.size();
}

size_t BufferPool::kept_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

}  // namespace strata::transport
