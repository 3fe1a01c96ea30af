// `strata bench-engine`: whole-model throughput of the single-process
// engine's step loop on a checkpoint, reported against this machine's read
// bandwidth and FMA peak measured in the same run.
#ifndef STRATA_TOOLS_BENCH_ENGINE_H_
#define STRATA_TOOLS_BENCH_ENGINE_H_

#include "absl/status/status.h"
#include "base/flags.h"

namespace strata::tools {

const base::FlagTable& BenchEngineFlags();
absl::Status BenchEngine(const base::ParsedFlags& flags);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_BENCH_ENGINE_H_
