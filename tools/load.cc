#include "tools/load.h"

#include <unistd.h>

#include <cstdint>
#include <iostream>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tools/bench.h"
#include "tools/client_channel.h"

namespace strata::tools {

using base::IntFlag;

const base::FlagTable& LoadFlags() {
  static const base::FlagTable* table = new base::FlagTable(
      "strata load --server HOST:PORT (--rate R | --concurrency C) [flags]",
      "A load generator: Generate calls with random prompts (optionally after a prefix they all share),\n"
      "open loop (Poisson arrivals) or closed loop, for a duration; prints status codes, TTFT, inter-token and\n"
      "request latency, output tokens/s (strata bench sends a number of requests instead).",
      {{"load",
        {base::AddressFlag("server", "the router's gRPC address").Required(),
         base::DoubleFlag("rate", 0, "open loop: requests per second, Poisson arrivals (0: closed loop)", 0),
         IntFlag("concurrency", 4, 1, 4096, "closed loop: callers; open loop: the most calls at once (default 256)"),
         IntFlag("duration-s", 10, 1, 86400, "how long to send new requests"),
         IntFlag("prompt-tokens", 32, 1, 1 << 20, "prompt length (random ids) after the shared prefix"),
         IntFlag("shared-prefix-tokens", 0, 0, 1 << 20,
                 "every prompt starts with the same this many random ids (a system prompt), drawn from --seed"),
         base::BoolFlag("warm-up", false, "send one request first, not counted (it caches a shared prefix)"),
         IntFlag("max-tokens", 32, 1, 1 << 20, "tokens each request generates (EOS ignored)"),
         IntFlag("vocab", 256, 2, 1 << 24, "prompt ids are drawn from [1, vocab)"),
         IntFlag("seed", 1, 0, INT64_MAX, "seeds the prompts and the arrivals"),
         IntFlag("timeout-ms", 600000, 1, 86400000, "each call's deadline"),
         base::BoolFlag("json", false, "print the summary as JSON")}},
       ClientSecurityFlags()});
  return *table;
}

absl::Status Load(const base::ParsedFlags& f) {
  RunOptions o;
  o.seed = static_cast<uint64_t>(f.Int("seed"));
  o.vocab = f.Int("vocab");
  o.timeout_ms = f.Int("timeout-ms");
  std::mt19937_64 prefix_rng(o.seed ^ 0x5eedull);
  std::uniform_int_distribution<int32_t> prefix_id(1, static_cast<int32_t>(o.vocab - 1));
  for (int64_t i = 0; i < f.Int("shared-prefix-tokens"); ++i) o.prefix.push_back(prefix_id(prefix_rng));
  WorkItem item;
  item.prompt_tokens = f.Int("prompt-tokens");
  item.output_tokens = f.Int("max-tokens");
  o.item = [item](int64_t) { return item; };
  const double rate = f.Double("rate");
  // Closed loop: every request is due at once and each caller sends again
  // as soon as it has an answer. Open loop: enough callers that arrivals
  // rarely wait for a free one, each timed from its arrival.
  o.rate = rate > 0 ? rate : std::numeric_limits<double>::infinity();
  o.concurrency = rate > 0 && !f.IsSet("concurrency") ? 256 : f.Int("concurrency");
  o.time_from_arrival = rate > 0;
  o.progress = isatty(STDERR_FILENO);
  o.progress_label = "strata load";
  auto channel = ClientChannel::FromFlags(f.String("server"), f);
  if (!channel.ok()) return channel.status();
  if (f.Bool("warm-up")) {
    RunOptions warm = o;
    warm.num_requests = 1;
    warm.concurrency = 1;
    warm.seed = o.seed + 1;
    warm.progress = false;
    const RunResult w = RunRequests(*channel, warm);
    if (w.samples.empty() || w.samples[0].code != 0) {
      return absl::UnavailableError(absl::StrCat("the warm-up request failed with ",
                                                 StatusCodeName(w.samples.empty() ? 14 : w.samples[0].code)));
    }
  }
  o.duration_s = static_cast<double>(f.Int("duration-s"));
  const RunResult r = RunRequests(*channel, o);
  const nlohmann::json summary = Summarize(r.samples, r.seconds);
  if (f.Bool("json")) {
    std::cout << summary.dump() << std::endl;
  } else {
    std::cout << FormatSummary(summary);
  }
  return absl::OkStatus();
}

}  // namespace strata::tools
