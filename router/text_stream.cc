#include "router/text_stream.h"

#include <algorithm>

namespace strata::router {

std::string TextStream::Push(int32_t id, bool* stopped) {
  *stopped = false;
  auto delta = decoder_.Push(id);
  if (delta.ok()) held_ += *delta;
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    *stopped = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  // Hold the longest suffix that could begin a stop string.
  size_t keep = 0;
  for (const std::string& s : stops_) {
    for (size_t len = std::min(s.size() - 1, held_.size()); len > keep; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string TextStream::Finish() {
  std::string out = held_ + decoder_.Flush();
  held_.clear();
  return out;
}

}  // namespace strata::router
