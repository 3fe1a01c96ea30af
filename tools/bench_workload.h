// What strata bench sends and when, with no I/O: request lengths (fixed,
// uniform, or each request's own from a JSONL file), the arrival times of
// an open loop (Poisson at --request-rate, or all at once), and the
// --request-rate spelling. tools/bench.cc does the sending.
#ifndef STRATA_TOOLS_BENCH_WORKLOAD_H_
#define STRATA_TOOLS_BENCH_WORKLOAD_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::tools {

// A length drawn uniformly from [min, max]; fixed when min == max.
// Invariant: 1 <= min <= max.
struct LengthDist {
  int64_t min = 1, max = 1;

  static LengthDist Fixed(int64_t n) { return {n, n}; }
  // INVALID_ARGUMENT naming `what` (a flag, e.g. "--prompt-tokens-min")
  // unless 1 <= min <= max.
  static absl::StatusOr<LengthDist> Uniform(int64_t min, int64_t max, const std::string& what);
  int64_t Sample(std::mt19937_64& rng) const;
};

// One request of a workload. The prompt is exactly one of: `prompt_ids`
// (sent as they are), `prompt_text` (the router tokenizes it), or neither,
// and then `prompt_tokens` random ids are drawn when it is sent.
struct WorkItem {
  int64_t prompt_tokens = 0;
  std::vector<int32_t> prompt_ids;
  std::string prompt_text;
  bool has_text = false;
  int64_t output_tokens = 1;  // generated exactly (EOS ignored)
};

// The largest prompt or output length a workload may ask for.
inline constexpr int64_t kMaxWorkLength = 1 << 20;

// A JSONL workload: one JSON object per line (blank lines skipped), each
//   {"prompt_tokens": 128, "output_tokens": 64}       random ids
//   {"prompt": "Tell me a story", "output_tokens": 64}  text
//   {"prompt_ids": [1, 2, 3], "output_tokens": 8}    ids
// with exactly one of prompt_tokens, prompt and prompt_ids; lengths in
// [1, kMaxWorkLength], ids in [0, 2^31). Any other key is an error (a typo
// would otherwise be ignored). INVALID_ARGUMENT as "SOURCE:LINE: what is
// wrong", or when no line holds a request.
absl::StatusOr<std::vector<WorkItem>> ParseJsonlWorkload(absl::string_view text, const std::string& source);

// --request-rate: "inf" (or "0"): every request arrives at once; otherwise
// requests per second, a finite number > 0. Returns +inf for all at once.
absl::StatusOr<double> ParseRequestRate(const std::string& text);

// Arrival times of an open loop, in seconds from the start: Poisson
// arrivals (exponential gaps of mean 1/rate) drawn from `seed`, or all 0
// when the rate is infinite. Not thread-safe.
class Arrivals {
 public:
  Arrivals(double rate, uint64_t seed);
  // The next arrival; nondecreasing.
  double Next();

 private:
  double rate_, t_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace strata::tools

#endif  // STRATA_TOOLS_BENCH_WORKLOAD_H_
