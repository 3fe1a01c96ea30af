#include "router/step_watchdog.h"

#include <algorithm>
#include <cmath>

namespace strata::router {

void StepWatchdog::Record(int64_t rows, double seconds) {
  if (rows < 1 || !(seconds >= 0) || !std::isfinite(seconds)) return;
  history_.push_back({rows, seconds});
  while (history_.size() > options_.history) history_.pop_front();
}

std::chrono::milliseconds StepWatchdog::Deadline(int64_t rows) const {
  rows = std::max<int64_t>(rows, 1);
  double slowest = -1;
  for (const Seen& s : history_) {
    if (s.rows > rows) continue;
    slowest = std::max(slowest, s.seconds * static_cast<double>(rows) / static_cast<double>(s.rows));
  }
  if (slowest < 0) return options_.cap;
  const double ms = static_cast<double>(options_.floor.count()) + options_.factor * slowest * 1000.0;
  return std::min(options_.cap, std::chrono::milliseconds(static_cast<int64_t>(std::ceil(ms))));
}

}  // namespace strata::router
