// What strata bench and strata load report, with no I/O: each request's
// outcome as the client saw it, and the summary of a run (request and
// token throughput; TTFT, inter-token, per-output-token and end-to-end
// latency as mean, p50, p90, p95 and p99; counts by status code name) as JSON
// or as a text table.
#ifndef STRATA_TOOLS_BENCH_STATS_H_
#define STRATA_TOOLS_BENCH_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace strata::tools {

// One request as the client saw it; times in seconds.
struct RequestSample {
  int code = 0;                // the gRPC status code (0: OK)
  double ttft = -1;            // to the first token; -1: none came
  double latency = 0;          // to the end of the stream
  std::vector<double> gaps;    // between token messages, divided by the tokens of the later one
  int64_t output_tokens = 0;   // tokens received
  int64_t prompt_tokens = 0;   // as the router counted them (its usage), else as sent
};

// The p-th quantile (p in [0, 1]) of `values`, interpolated linearly
// between the closest ranks (numpy.percentile's default, which vLLM's
// benchmark reports); NaN for none.
double Quantile(std::vector<double> values, double p);

// {"mean", "p50", "p90", "p95", "p99"} of `values`; each null when there
// are none (p95 as strata load reported it before strata bench).
nlohmann::json Distribution(const std::vector<double>& values);

// "OK", "RESOURCE_EXHAUSTED", ... (the gRPC names); "CODE_N" outside the enum.
std::string StatusCodeName(int code);

// The summary of a run of `seconds` (from the first send to the last
// reply):
//   requests, completed (OK), codes {name: count}, seconds,
//   request_throughput (completed per second), prompt_tokens (of the
//   completed requests), output_tokens (every token received, also on
//   streams that then failed), output_tokens_per_s, and ttft_s, inter_token_s,
//   tpot_s, latency_s as Distribution()s.
// TTFT counts every request with a first token, inter-token gaps every
// gap, TPOT ((latency - ttft) / (tokens - 1)) and end-to-end latency the
// completed requests only.
nlohmann::json Summarize(const std::vector<RequestSample>& samples, double seconds);

// The summary as a table for people (latencies in milliseconds).
std::string FormatSummary(const nlohmann::json& summary);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_BENCH_STATS_H_
