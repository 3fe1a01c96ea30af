#include "tools/bench.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "strata/v1/inference.grpc.pb.h"

namespace strata::tools {
namespace {

using Clock = std::chrono::steady_clock;
using base::IntFlag;

// Without a cap, one caller per request up to this many.
constexpr int64_t kMaxCallers = 4096;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// One streaming Generate call, timed from `start`.
RequestSample CallOnce(v1::Inference::Stub* stub, const ClientChannel& channel, const RunOptions& o,
                       const WorkItem& item, int64_t index, Clock::time_point start) {
  v1::GenerateRequest req;
  if (item.has_text) {
    req.set_prompt(item.prompt_text);
  } else if (!item.prompt_ids.empty()) {
    for (int32_t t : item.prompt_ids) req.add_prompt_ids(t);
  } else {
    // Random ids, the same for request `index` whichever caller sends it.
    std::mt19937_64 rng(o.seed * 1000003 + static_cast<uint64_t>(index));
    std::uniform_int_distribution<int32_t> id(1, static_cast<int32_t>(std::max<int64_t>(o.vocab - 1, 1)));
    for (int32_t t : o.prefix) req.add_prompt_ids(t);
    for (int64_t i = 0; i < item.prompt_tokens; ++i) req.add_prompt_ids(id(rng));
  }
  req.mutable_stop()->set_max_tokens(static_cast<int32_t>(item.output_tokens));
  req.mutable_stop()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(o.timeout_ms));
  channel.Authorize(&ctx);
  RequestSample out;
  out.prompt_tokens = req.prompt_ids_size();
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse m;
  Clock::time_point last = start;
  while (reader->Read(&m)) {
    if (m.has_usage()) out.prompt_tokens = m.usage().prompt_tokens();
    if (m.tokens_size() == 0) continue;
    const Clock::time_point now = Clock::now();
    if (out.ttft < 0) {
      out.ttft = Seconds(now - start);
    } else {
      out.gaps.push_back(Seconds(now - last) / m.tokens_size());
    }
    last = now;
    out.output_tokens += m.tokens_size();
  }
  out.code = static_cast<int>(reader->Finish().error_code());
  out.latency = Seconds(Clock::now() - start);
  return out;
}

// "\r[#####-----] 45/100 requests, 2 failed, 12.3 s" on stderr, redrawn
// until Stop.
class ProgressBar {
 public:
  ProgressBar(const RunOptions& o, const std::atomic<int64_t>& done, const std::atomic<int64_t>& failed)
      : o_(o), done_(done), failed_(failed), start_(Clock::now()) {
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!stop_) {
        Draw();
        cv_.wait_for(lock, std::chrono::milliseconds(200));
      }
      Draw();
      std::fputs("\n", stderr);
    });
  }
  ~ProgressBar() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void Draw() {
    const double elapsed = Seconds(Clock::now() - start_);
    const int64_t done = done_.load();
    const double frac = o_.num_requests > 0 ? static_cast<double>(done) / static_cast<double>(o_.num_requests)
                                            : std::min(1.0, elapsed / std::max(o_.duration_s, 1e-9));
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(std::round(std::clamp(frac, 0.0, 1.0) * kWidth));
    const std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '-');
    const std::string count = o_.num_requests > 0 ? absl::StrCat(done, "/", o_.num_requests, " requests")
                                                  : absl::StrCat(done, " requests");
    std::fprintf(stderr, "\r\033[K%s [%s] %s, %lld failed, %.1f s", o_.progress_label.c_str(), bar.c_str(),
                 count.c_str(), static_cast<long long>(failed_.load()), elapsed);
    std::fflush(stderr);
  }

  const RunOptions& o_;
  const std::atomic<int64_t>& done_;
  const std::atomic<int64_t>& failed_;
  const Clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// --X-len-dist with --X-tokens, or --X-tokens-min and --X-tokens-max.
absl::StatusOr<LengthDist> LengthFlags(const base::ParsedFlags& f, const std::string& x) {
  const std::string dist = x + "-len-dist", fixed = x + "-tokens", lo = x + "-tokens-min", hi = x + "-tokens-max";
  if (f.String(dist) == "fixed") {
    for (const std::string& bound : {lo, hi}) {
      if (f.IsSet(bound)) return absl::InvalidArgumentError(absl::StrCat("--", bound, " needs --", dist, " uniform"));
    }
    return LengthDist::Fixed(f.Int(fixed));
  }
  if (f.IsSet(fixed)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", fixed, " is the fixed length; with --", dist, " uniform give --", lo, " and --", hi));
  }
  for (const std::string& bound : {lo, hi}) {
    if (!f.IsSet(bound)) return absl::InvalidArgumentError(absl::StrCat("--", dist, " uniform needs --", bound));
  }
  return LengthDist::Uniform(f.Int(lo), f.Int(hi), absl::StrCat("--", lo, " / --", hi));
}

}  // namespace

RunResult RunRequests(const ClientChannel& channel, const RunOptions& o) {
  const int64_t callers = std::max<int64_t>(1, o.num_requests >= 0 ? std::min(o.concurrency, o.num_requests)
                                                                     : o.concurrency);
  std::mutex mu;
  Arrivals arrivals(o.rate, o.seed);
  int64_t next_index = 0;
  std::vector<RequestSample> samples;
  std::atomic<int64_t> done{0}, failed{0};
  std::optional<ProgressBar> bar;
  if (o.progress) bar.emplace(o, done, failed);
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (int64_t c = 0; c < callers; ++c) {
    threads.emplace_back([&] {
      auto stub = v1::Inference::NewStub(channel.channel());
      while (true) {
        int64_t index;
        Clock::time_point scheduled;
        {
          // Arrivals are taken in order by whichever caller is free, so
          // with every caller busy the next arrival waits: the cap.
          std::lock_guard<std::mutex> lock(mu);
          if (o.num_requests >= 0 && next_index >= o.num_requests) return;
          const double t = arrivals.Next();
          if (o.num_requests < 0 && std::max(t, Seconds(Clock::now() - start)) >= o.duration_s) return;
          index = next_index++;
          scheduled = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(t));
        }
        std::this_thread::sleep_until(scheduled);
        const WorkItem item = o.item(index);
        RequestSample s = CallOnce(stub.get(), channel, o, item, index,
                                   o.time_from_arrival ? scheduled : Clock::now());
        if (s.code != 0) failed.fetch_add(1);
        done.fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        samples.push_back(std::move(s));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  RunResult r;
  r.seconds = Seconds(Clock::now() - start);
  bar.reset();
  r.samples = std::move(samples);
  return r;
}

const base::FlagTable& BenchFlags() {
  static const base::FlagTable* table = new base::FlagTable(
      "strata bench --server HOST:PORT [--num-prompts N] [--request-rate R] [--concurrency C] [flags]",
      "An open-loop serving benchmark (in the manner of vLLM's): --num-prompts streaming Generate calls arriving\n"
      "at --request-rate (Poisson; inf: all at once), at most --concurrency in flight; prompt and output lengths\n"
      "fixed, uniform, or each request's own from a JSONL --dataset. Prints request and output-token throughput,\n"
      "TTFT, inter-token, per-output-token and end-to-end latency (mean, p50, p90, p95, p99), and counts by status code.",
      {{"bench",
        {base::AddressFlag("server", "the router's gRPC address").Required(),
         IntFlag("num-prompts", 100, 1, 10000000, "requests to send (with --dataset: default one per line; it wraps)"),
         base::StringFlag("request-rate", "inf", "R",
                          "arrivals per second, Poisson (inf or 0: every request arrives at once)"),
         IntFlag("concurrency", 0, 0, kMaxCallers,
                 "the most requests in flight; arrivals past it wait for one to end, and are timed from when they "
                 "are sent; with --request-rate inf a closed loop of this many callers (0: no cap, one caller "
                 "per request up to 4096)"),
         base::ChoiceFlag("prompt-len-dist", "fixed", {"fixed", "uniform"},
                          "prompt lengths: --prompt-tokens, or uniform in [--prompt-tokens-min, --prompt-tokens-max]"),
         IntFlag("prompt-tokens", 32, 1, kMaxWorkLength, "the fixed prompt length (random ids)"),
         IntFlag("prompt-tokens-min", std::nullopt, 1, kMaxWorkLength, "uniform prompt lengths: the shortest"),
         IntFlag("prompt-tokens-max", std::nullopt, 1, kMaxWorkLength, "uniform prompt lengths: the longest"),
         base::ChoiceFlag("output-len-dist", "fixed", {"fixed", "uniform"},
                          "output lengths: --output-tokens, or uniform in [--output-tokens-min, --output-tokens-max]"),
         IntFlag("output-tokens", 32, 1, kMaxWorkLength, "the fixed output length (EOS ignored)"),
         IntFlag("output-tokens-min", std::nullopt, 1, kMaxWorkLength, "uniform output lengths: the shortest"),
         IntFlag("output-tokens-max", std::nullopt, 1, kMaxWorkLength, "uniform output lengths: the longest"),
         base::StringFlag("dataset", std::nullopt, "FILE",
                          "JSONL, one request per line: {\"prompt_tokens\": N | \"prompt\": TEXT | \"prompt_ids\": "
                          "[...], \"output_tokens\": N} (instead of the length flags)"),
         IntFlag("vocab", 256, 2, 1 << 24, "random prompt ids are drawn from [1, vocab)"),
         IntFlag("seed", 1, 0, INT64_MAX, "seeds the lengths, the prompts and the arrivals"),
         IntFlag("timeout-ms", 600000, 1, 86400000, "each call's deadline"),
         base::BoolFlag("progress", true, "a progress bar on stderr, when stderr is a terminal"),
         base::BoolFlag("json", false, "print the summary as one JSON object")}},
       ClientSecurityFlags()});
  return *table;
}

absl::Status Bench(const base::ParsedFlags& f) {
  STRATA_ASSIGN_OR_RETURN(const double rate, ParseRequestRate(f.String("request-rate")));
  RunOptions o;
  o.seed = static_cast<uint64_t>(f.Int("seed"));
  o.vocab = f.Int("vocab");
  o.timeout_ms = f.Int("timeout-ms");
  o.rate = rate;
  o.num_requests = f.Int("num-prompts");
  auto workload = std::make_shared<std::vector<WorkItem>>();
  if (f.IsSet("dataset")) {
    for (const char* x : {"prompt-len-dist", "prompt-tokens", "prompt-tokens-min", "prompt-tokens-max",
                          "output-len-dist", "output-tokens", "output-tokens-min", "output-tokens-max"}) {
      if (f.IsSet(x)) {
        return absl::InvalidArgumentError(absl::StrCat("--", x, ": --dataset gives each request's lengths"));
      }
    }
    const std::string path = f.String("dataset");
    std::ifstream in(path);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("--dataset: cannot read ", path));
    std::stringstream text;
    text << in.rdbuf();
    STRATA_ASSIGN_OR_RETURN(*workload, ParseJsonlWorkload(text.str(), path));
    if (!f.IsSet("num-prompts")) o.num_requests = static_cast<int64_t>(workload->size());
    o.item = [workload](int64_t i) { return (*workload)[static_cast<size_t>(i) % workload->size()]; };
  } else {
    STRATA_ASSIGN_OR_RETURN(const LengthDist prompt, LengthFlags(f, "prompt"));
    STRATA_ASSIGN_OR_RETURN(const LengthDist output, LengthFlags(f, "output"));
    const uint64_t seed = o.seed;
    o.item = [prompt, output, seed](int64_t i) {
      std::mt19937_64 rng(seed * 7919 + static_cast<uint64_t>(i));
      WorkItem w;
      w.prompt_tokens = prompt.Sample(rng);
      w.output_tokens = output.Sample(rng);
      return w;
    };
  }
  o.concurrency = f.Int("concurrency") > 0 ? f.Int("concurrency") : std::min(o.num_requests, kMaxCallers);
  o.time_from_arrival = f.Int("concurrency") == 0;
  o.progress = f.Bool("progress") && isatty(STDERR_FILENO);
  STRATA_ASSIGN_OR_RETURN(ClientChannel channel, ClientChannel::FromFlags(f.String("server"), f));
  const RunResult r = RunRequests(channel, o);
  nlohmann::json summary = Summarize(r.samples, r.seconds);
  summary["request_rate"] = std::isfinite(rate) ? nlohmann::json(rate) : nlohmann::json("inf");
  summary["concurrency"] = f.Int("concurrency");
  if (f.Bool("json")) {
    std::cout << summary.dump() << std::endl;
  } else {
    std::cout << FormatSummary(summary);
  }
  return absl::OkStatus();
}

}  // namespace strata::tools
