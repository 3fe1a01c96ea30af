#include "router/pipeline_epoch.h"

#include <algorithm>
#include <atomic>
#include <chrono>

namespace strata::router {

namespace {

std::atomic<uint64_t> last_epoch{0};

uint64_t NowMicros() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

}  // namespace

uint64_t NextPipelineEpoch() {
  uint64_t last = last_epoch.load();
  uint64_t next;
  do {
    next = std::max(last + 1, NowMicros());
  } while (!last_epoch.compare_exchange_weak(last, next));
  return next;
}

uint64_t PipelineEpochFloor() { return std::max(last_epoch.load() + 1, NowMicros()); }

}  // namespace strata::router
