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

// Reserved once: every epoch made after it is above it, whatever the clock
// does later, and a worker that registers again with this router keeps
// accepting the epoch in use.
uint64_t PipelineEpochFloor() {
  static const uint64_t floor = NextPipelineEpoch();
  return floor;
}

}  // namespace strata::router
