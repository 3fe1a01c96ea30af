// Pipeline epochs: each bring-up of a pipeline (its warm-up and every step
// after it, until it goes down) carries a new epoch in WireHeader::epoch.
// Workers re-form their tensor-parallel group and drop their data-plane
// connections at the first step of a newer epoch, and drop a step of an
// older one (worker/data_loop.h). Epochs are the microseconds since the
// Unix epoch when they began, made strictly increasing within the process,
// so a restarted router's epochs are above its predecessor's on the same
// clock; a worker also takes the floor from its registration answer, which
// covers a router on another host whose clock is behind.
#ifndef STRATA_ROUTER_PIPELINE_EPOCH_H_
#define STRATA_ROUTER_PIPELINE_EPOCH_H_

#include <cstdint>

namespace strata::router {

// A new epoch, above every one made before in this process. Thread-safe.
uint64_t NextPipelineEpoch();
// Below every epoch this router process brings up (what registering
// workers are told): reserved at the first call, so the same for the
// process's life. Thread-safe.
uint64_t PipelineEpochFloor();

}  // namespace strata::router

#endif  // STRATA_ROUTER_PIPELINE_EPOCH_H_
