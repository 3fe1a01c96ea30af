// strata load: a load generator against a router's gRPC API. Open loop
// (Poisson arrivals at --rate requests per second, each on its own call,
// so a slow server meets growing concurrency as real traffic does) or
// closed loop (--concurrency callers that send again as soon as they get
// an answer), for --duration-s. Prints what it saw: requests by status
// code, time to first token, inter-token latency and request latency
// percentiles (from the client's side), and output tokens per second. The
// calls and the summary are strata bench's (tools/bench.h).
#ifndef STRATA_TOOLS_LOAD_H_
#define STRATA_TOOLS_LOAD_H_

#include "absl/status/status.h"
#include "base/flags.h"

namespace strata::tools {

const base::FlagTable& LoadFlags();
absl::Status Load(const base::ParsedFlags& flags);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_LOAD_H_
