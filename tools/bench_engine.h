// `strata bench-engine`: whole-model throughput of the single-process
// engine's step loop on a checkpoint, reported against this machine's read
// bandwidth and FMA peak measured in the same run.
#ifndef STRATA_TOOLS_BENCH_ENGINE_H_
#define STRATA_TOOLS_BENCH_ENGINE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strata::tools {

absl::Status BenchEngine(const std::vector<std::string>& args);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_BENCH_ENGINE_H_
