#include "tools/load.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "strata/v1/inference.grpc.pb.h"
#include "tools/client_channel.h"

namespace strata::tools {
namespace {

using Clock = std::chrono::steady_clock;
using base::IntFlag;

// What one call saw.
struct Sample {
  grpc::StatusCode code = grpc::StatusCode::OK;
  double ttft = -1, latency = 0;  // seconds
  std::vector<double> gaps;       // between consecutive token messages, per token
  int64_t tokens = 0;
};

struct Settings {
  std::string server;
  int64_t prompt_tokens = 0, max_tokens = 0, vocab = 0;
  int64_t timeout_ms = 0;
  std::vector<int32_t> prefix;  // the ids every prompt starts with (a shared system prompt)
};

// One Generate call with a random prompt, timed from `scheduled` (an open
// loop's arrival time, so client-side waiting counts as it would for a user).
Sample Call(v1::Inference::Stub* stub, const ClientChannel& client, const Settings& s, std::mt19937_64& rng,
            Clock::time_point scheduled) {
  v1::GenerateRequest req;
  std::uniform_int_distribution<int32_t> id(1, static_cast<int32_t>(s.vocab - 1));
  for (int32_t t : s.prefix) req.add_prompt_ids(t);
  for (int64_t i = 0; i < s.prompt_tokens; ++i) req.add_prompt_ids(id(rng));
  req.mutable_stop()->set_max_tokens(static_cast<int32_t>(s.max_tokens));
  req.mutable_stop()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(s.timeout_ms));
  client.Authorize(&ctx);
  Sample out;
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse m;
  Clock::time_point last = scheduled;
  while (reader->Read(&m)) {
    if (m.tokens_size() == 0) continue;
    const Clock::time_point now = Clock::now();
    if (out.ttft < 0) {
      out.ttft = std::chrono::duration<double>(now - scheduled).count();
    } else {
      out.gaps.push_back(std::chrono::duration<double>(now - last).count() / m.tokens_size());
    }
    last = now;
    out.tokens += m.tokens_size();
  }
  out.code = reader->Finish().error_code();
  out.latency = std::chrono::duration<double>(Clock::now() - scheduled).count();
  return out;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

nlohmann::json Summary(const std::vector<Sample>& samples, double seconds) {
  std::map<std::string, int64_t> codes;
  std::vector<double> ttft, gaps, latency;
  int64_t tokens = 0;
  for (const Sample& s : samples) {
    codes[s.code == grpc::StatusCode::OK ? "OK" : absl::StrCat("code_", static_cast<int>(s.code))]++;
    if (s.ttft >= 0) ttft.push_back(s.ttft);
    gaps.insert(gaps.end(), s.gaps.begin(), s.gaps.end());
    if (s.code == grpc::StatusCode::OK) latency.push_back(s.latency);
    tokens += s.tokens;
  }
  auto pct = [](const std::vector<double>& v) {
    return nlohmann::json{{"p50", Percentile(v, 0.5)}, {"p95", Percentile(v, 0.95)}, {"p99", Percentile(v, 0.99)}};
  };
  return {{"requests", samples.size()}, {"codes", codes},           {"seconds", seconds},
          {"output_tokens", tokens},    {"output_tokens_per_s", tokens / std::max(seconds, 1e-9)},
          {"ttft_s", pct(ttft)},        {"inter_token_s", pct(gaps)}, {"latency_s", pct(latency)}};
}

}  // namespace

const base::FlagTable& LoadFlags() {
  static const base::FlagTable* table = new base::FlagTable(
      "strata load --server HOST:PORT (--rate R | --concurrency C) [flags]",
      "A load generator: Generate calls with random prompts (optionally after a prefix they all share),\n"
      "open loop (Poisson arrivals) or closed loop; prints status codes, TTFT, inter-token and request\n"
      "latency percentiles, output tokens/s.",
      {{"load",
        {base::AddressFlag("server", "the router's gRPC address").Required(),
         base::DoubleFlag("rate", 0, "open loop: requests per second, Poisson arrivals (0: closed loop)"),
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
  Settings s{f.String("server"), f.Int("prompt-tokens"), f.Int("max-tokens"), f.Int("vocab"), f.Int("timeout-ms"), {}};
  std::mt19937_64 prefix_rng(static_cast<uint64_t>(f.Int("seed")) ^ 0x5eedull);
  std::uniform_int_distribution<int32_t> prefix_id(1, static_cast<int32_t>(s.vocab - 1));
  for (int64_t i = 0; i < f.Int("shared-prefix-tokens"); ++i) s.prefix.push_back(prefix_id(prefix_rng));
  const double rate = f.Double("rate");
  if (rate < 0) return absl::InvalidArgumentError("--rate: must be 0 or positive");
  // Open loop: enough callers that arrivals rarely wait for a free one.
  const int64_t concurrency = rate > 0 && !f.IsSet("concurrency") ? 256 : f.Int("concurrency");
  auto channel = ClientChannel::FromFlags(s.server, f);
  if (!channel.ok()) return channel.status();
  auto stub = v1::Inference::NewStub(channel->channel());
  if (f.Bool("warm-up")) {
    std::mt19937_64 warm_rng(static_cast<uint64_t>(f.Int("seed")) + 1);
    const Sample w = Call(stub.get(), *channel, s, warm_rng, Clock::now());
    if (w.code != grpc::StatusCode::OK) {
      return absl::UnavailableError(absl::StrCat("the warm-up request failed with code ", static_cast<int>(w.code)));
    }
  }
  const auto start = Clock::now();
  const auto end = start + std::chrono::seconds(f.Int("duration-s"));
  std::mutex mu;
  std::vector<Sample> samples;
  // Open loop: one shared Poisson schedule, taken by whichever caller is free.
  std::mt19937_64 arrivals(static_cast<uint64_t>(f.Int("seed")));
  std::exponential_distribution<double> gap(rate > 0 ? rate : 1);
  Clock::time_point next_arrival = start;
  std::vector<std::thread> callers;
  for (int64_t c = 0; c < concurrency; ++c) {
    callers.emplace_back([&, c] {
      std::mt19937_64 rng(static_cast<uint64_t>(f.Int("seed")) * 7919 + static_cast<uint64_t>(c));
      while (true) {
        Clock::time_point scheduled = Clock::now();
        if (rate > 0) {
          std::lock_guard<std::mutex> lock(mu);
          scheduled = next_arrival;
          next_arrival += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(arrivals)));
        }
        if (scheduled >= end) return;
        std::this_thread::sleep_until(scheduled);
        Sample one = Call(stub.get(), *channel, s, rng, scheduled);
        std::lock_guard<std::mutex> lock(mu);
        samples.push_back(std::move(one));
      }
    });
  }
  for (auto& t : callers) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const nlohmann::json summary = Summary(samples, seconds);
  if (f.Bool("json")) {
    std::cout << summary.dump() << std::endl;
  } else {
    std::cout << summary.dump(2) << std::endl;
  }
  return absl::OkStatus();
}

}  // namespace strata::tools
