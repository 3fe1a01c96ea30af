// strata bench: an open-loop load generator for a running router, in the
// manner of vLLM's serving benchmark. --num-prompts requests arrive at
// --request-rate (Poisson; inf: all at once), at most --concurrency in
// flight (a closed loop of that many callers when the rate is inf); the
// lengths are fixed, uniform or each request's own from a JSONL file
// (tools/bench_workload.h); every request streams. Prints request and
// output-token throughput, TTFT, inter-token, per-output-token and
// end-to-end latency (mean, p50, p90, p95, p99) and counts by status code
// (tools/bench_stats.h), as a table or --json; a progress bar on stderr
// when it is a terminal.
//
// strata load (tools/load.h) sends the same calls through RunRequests for
// a duration instead of a count.
#ifndef STRATA_TOOLS_BENCH_H_
#define STRATA_TOOLS_BENCH_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/flags.h"
#include "tools/bench_stats.h"
#include "tools/bench_workload.h"
#include "tools/client_channel.h"

namespace strata::tools {

struct RunOptions {
  // Request i's lengths and prompt; called from the caller threads, so it
  // must be thread-safe (a pure function of i).
  std::function<WorkItem(int64_t i)> item;
  int64_t num_requests = -1;   // -1: until `duration_s`
  double duration_s = 0;       // with num_requests -1: no arrival after this
  double rate = 0;             // requests per second; +inf: all at once
  int64_t concurrency = 1;     // caller threads: the most requests in flight
  uint64_t seed = 1;           // arrivals and random prompt ids
  int64_t vocab = 256;         // random prompt ids are drawn from [1, vocab)
  std::vector<int32_t> prefix;  // ids every random prompt starts with
  int64_t timeout_ms = 600000;  // each call's deadline
  // Time each request from its scheduled arrival, so a caller that is late
  // (every caller busy) counts as waiting, as a user would; otherwise from
  // when it is sent (vLLM's benchmark with --max-concurrency).
  bool time_from_arrival = false;
  bool progress = false;  // a progress bar on stderr
  std::string progress_label = "strata bench";
};

struct RunResult {
  std::vector<RequestSample> samples;
  double seconds = 0;  // first arrival to the last reply
};

// Sends the requests of `o` over `channel` and waits for every reply.
RunResult RunRequests(const ClientChannel& channel, const RunOptions& o);

const base::FlagTable& BenchFlags();
absl::Status Bench(const base::ParsedFlags& flags);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_BENCH_H_
