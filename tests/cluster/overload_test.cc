// The overload suite (issue 14), on one replica of one stage (the tiny
// model, --max-queue 32):
//  1. the sustainable rate, measured in the same run: a closed loop of
//     kClosedCallers callers, as many as --max-queue (so no request can
//     find the queue full, and none is refused), for kClosedSeconds; its
//     completions per second are the rate the replica sustains with its
//     queue bounded (64 callers, more than one step admits at once when
//     their calls end together, already overflow a queue of 32);
//  2. an open loop at 3x that rate (Poisson arrivals, seeded) for
//     kOpenSeconds: the excess is refused with RESOURCE_EXHAUSTED, each
//     refusal within kRefusalP99 at the 99th percentile (from the call
//     being sent to its status), and the admitted requests' TTFT (from
//     their scheduled arrival, as a user waits) stays within
//     AdmittedTtftBound(): a queue of --max-queue drained at the
//     sustainable rate, twice over, plus the closed loop's own TTFT p99,
//     plus kTtftSlack. A queue that let everything in would see its TTFT
//     grow by 2 s for each second of the run.
// Every call ends OK or RESOURCE_EXHAUSTED; the router's counts by outcome
// equal the client's; nothing is held after; no process dies.
// It prints one table row per phase; docs/reliability.md records them.

#include <cstdio>
#include <mutex>
#include <random>

#include "model/config.h"
#include "model/file_system.h"
#include "model/make_model.h"
#include "tests/cluster/suite_cluster.h"

namespace strata {
namespace {

using cluster_test::CallResult;
using cluster_test::MetricSum;
using cluster_test::Percentile;
using cluster_test::SuiteClock;

constexpr int kMaxQueue = 32;
// As many callers as the queue holds: a request can never find it full.
constexpr int kClosedCallers = kMaxQueue;
constexpr double kClosedSeconds = 10;
constexpr double kOpenSeconds = 15;
constexpr double kOverloadFactor = 3;
constexpr int kOpenCallers = 512;
constexpr int kPromptTokens = 32, kOutputTokens = 64;
constexpr double kRefusalP99 = 0.100;
constexpr double kTtftSlack = 0.5;
constexpr uint64_t kSeed = 14;

struct Sample {
  grpc::StatusCode code = grpc::StatusCode::OK;
  double ttft = -1;     // from the scheduled arrival
  double latency = 0;   // from the send
  double late = 0;      // the send after the scheduled arrival
  int64_t tokens = 0;
};

struct Phase {
  std::vector<Sample> samples;
  double seconds = 0;
  std::map<std::string, int64_t> Codes() const {
    std::map<std::string, int64_t> c;
    for (const Sample& s : samples) ++c[cluster_test::CodeName(s.code)];
    return c;
  }
  int64_t Count(grpc::StatusCode code) const {
    int64_t n = 0;
    for (const Sample& s : samples) n += s.code == code;
    return n;
  }
  std::vector<double> Ttft() const {  // completed calls
    std::vector<double> v;
    for (const Sample& s : samples) {
      if (s.code == grpc::StatusCode::OK) v.push_back(s.ttft);
    }
    return v;
  }
  std::vector<double> Refusals() const {
    std::vector<double> v;
    for (const Sample& s : samples) {
      if (s.code == grpc::StatusCode::RESOURCE_EXHAUSTED) v.push_back(s.latency);
    }
    return v;
  }
  std::vector<double> Lateness() const {
    std::vector<double> v;
    for (const Sample& s : samples) v.push_back(s.late);
    return v;
  }
};

v1::GenerateRequest Request(uint64_t index) {
  std::mt19937_64 rng(kSeed * 1000003 + index);
  std::uniform_int_distribution<int32_t> id(1, 511);
  v1::GenerateRequest req;
  for (int i = 0; i < kPromptTokens; ++i) req.add_prompt_ids(id(rng));
  req.mutable_stop()->set_max_tokens(kOutputTokens);
  req.mutable_stop()->set_ignore_eos(true);
  return req;
}

// `callers` threads for `seconds`. rate 0: a closed loop (each caller sends
// its next call when the last ends); otherwise Poisson arrivals at `rate`
// per second, taken in order by whichever caller is free.
Phase RunPhase(v1::Inference::Stub* stub, int callers, double seconds, double rate) {
  Phase phase;
  std::mutex mu;
  std::mt19937_64 arrivals(kSeed);
  std::exponential_distribution<double> gap(rate > 0 ? rate : 1);
  double next_arrival = 0;
  uint64_t next_index = 0;
  const SuiteClock::time_point start = SuiteClock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < callers; ++t) {
    threads.emplace_back([&] {
      while (true) {
        uint64_t index;
        SuiteClock::time_point scheduled;
        {
          std::lock_guard<std::mutex> lock(mu);
          const double at = rate > 0 ? next_arrival : cluster_test::SecondsSince(start);
          if (at >= seconds) return;
          if (rate > 0) next_arrival += gap(arrivals);
          index = next_index++;
          scheduled = start + std::chrono::duration_cast<SuiteClock::duration>(std::chrono::duration<double>(at));
        }
        std::this_thread::sleep_until(scheduled);
        const SuiteClock::time_point sent = SuiteClock::now();
        const CallResult r = cluster_test::StreamCall(stub, Request(index), -1, 60000);
        Sample s;
        s.code = r.code;
        s.late = std::chrono::duration<double>(sent - scheduled).count();
        s.ttft = r.ttft < 0 ? -1 : r.ttft + s.late;
        s.latency = r.latency;
        s.tokens = r.tokens;
        std::lock_guard<std::mutex> lock(mu);
        phase.samples.push_back(s);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  phase.seconds = cluster_test::SecondsSince(start);
  return phase;
}

std::map<std::string, double> Outcomes(const std::string& metrics) {
  std::map<std::string, double> out;
  for (const char* o : {"stop", "length", "cancelled", "error", "unavailable", "invalid", "rejected", "deadline"}) {
    out[o] = std::max(0.0, MetricSum(metrics, "strata_requests_total", {{"outcome", o}}));
  }
  return out;
}

// "p50 / p99 ms" of `v`, in seconds.
std::string Ms2(const std::vector<double>& v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.1f / %.1f ms", 1000 * Percentile(v, 0.5), 1000 * Percentile(v, 0.99));
  return buf;
}

std::string Row(const char* name, const Phase& p, double offered) {
  const std::vector<double> ttft = p.Ttft(), refusals = p.Refusals(), late = p.Lateness();
  char buf[1024];
  std::snprintf(buf, sizeof(buf),
                "| %s | %.0f | %.1f | %zu | %s | %.1f | %.0f / %.0f ms | %s | %.1f ms |\n", name, p.seconds,
                offered, p.samples.size(), cluster_test::FormatCodes(p.Codes()).c_str(),
                static_cast<double>(p.Count(grpc::StatusCode::OK)) / p.seconds, 1000 * Percentile(ttft, 0.5),
                1000 * Percentile(ttft, 0.99),
                refusals.empty() ? "-" : Ms2(refusals).c_str(),
                1000 * Percentile(late, 0.99));
  return buf;
}

TEST(OverloadTest, ThreeTimesTheSustainableRateIsRefusedFastAndAdmittedTtftBounded) {
  const std::string model = cluster_test::TempDir() + "/overload_model";
  {
    model::MakeModelOptions o;
    o.config = *model::LlamaPreset("tiny");
    o.dtype = model::DType::kF32;
    o.seed = 4;
    ASSERT_TRUE(model::WriteRandomModel(model::PosixFileSystem(), model, o).ok());
  }
  cluster_test::UpCluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model, {"--stages", "1", "--tp", "1", "--kv-dtype", "f32", "--max-queue",
                                          absl::StrCat(kMaxQueue), "--restart-workers=false"}));
  // A short warm-up, so the closed loop measures a warm router.
  (void)RunPhase(c.stub(), kClosedCallers, 2, 0);
  const std::map<std::string, double> before = Outcomes(c.RouterMetrics());

  const Phase closed = RunPhase(c.stub(), kClosedCallers, kClosedSeconds, 0);
  const double sustainable = static_cast<double>(closed.Count(grpc::StatusCode::OK)) / closed.seconds;
  const double closed_ttft_p99 = Percentile(closed.Ttft(), 0.99);
  const double rate = kOverloadFactor * sustainable;
  const Phase open = RunPhase(c.stub(), kOpenCallers, kOpenSeconds, rate);
  const double ttft_bound = 2.0 * kMaxQueue / sustainable + closed_ttft_p99 + kTtftSlack;

  // Settle: the last admitted calls have ended; nothing is held.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::string metrics = c.RouterMetrics();
  const std::map<std::string, double> after = Outcomes(metrics);
  std::map<std::string, int64_t> router;
  for (const auto& [k, v] : after) router[k] = static_cast<int64_t>(v - before.at(k));
  const bool alive = c.AllRunning();

  std::printf(
      "\noverload: %s; strata up --stages 1 --tp 1 --max-queue %d, tiny model, %d prompt / %d output tokens\n"
      "| phase | seconds | offered req/s | requests | by code | completed/s | admitted TTFT p50 / p99 | "
      "refusal p50 / p99 | client late p99 |\n|---|---|---|---|---|---|---|---|---|\n%s%s"
      "sustainable %.1f req/s; admitted TTFT bound %.0f ms; refusal p99 bound %.0f ms; KV blocks after %.0f\n\n",
      cluster_test::MachineLine().c_str(), kMaxQueue, kPromptTokens, kOutputTokens,
      Row(absl::StrCat("closed loop of ", kClosedCallers).c_str(), closed,
          static_cast<double>(closed.samples.size()) / closed.seconds)
          .c_str(),
      Row(absl::StrCat("open loop at ", kOverloadFactor, "x").c_str(), open,
          static_cast<double>(open.samples.size()) / kOpenSeconds)
          .c_str(),
      sustainable, 1000 * ttft_bound, 1000 * kRefusalP99, MetricSum(metrics, "strata_pipeline_kv_used_blocks"));
  std::fflush(stdout);

  EXPECT_TRUE(alive) << "a process of the cluster died";
  // The closed loop is the sustainable rate: nothing refused.
  EXPECT_EQ(closed.Count(grpc::StatusCode::OK), static_cast<int64_t>(closed.samples.size()));
  ASSERT_GT(sustainable, 1.0);
  // At 3x, the excess is refused and the rest served.
  const int64_t ok = open.Count(grpc::StatusCode::OK), refused = open.Count(grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ok + refused, static_cast<int64_t>(open.samples.size())) << cluster_test::FormatCodes(open.Codes());
  EXPECT_GT(ok, 0);
  // Two thirds would be refused if the replica served exactly its closed
  // loop's rate; a third at least.
  EXPECT_GE(3 * refused, static_cast<int64_t>(open.samples.size())) << cluster_test::FormatCodes(open.Codes());
  for (const Sample& s : open.samples) {
    if (s.code == grpc::StatusCode::OK) {
      EXPECT_EQ(s.tokens, kOutputTokens);
    }
  }
  EXPECT_LE(Percentile(open.Refusals(), 0.99), kRefusalP99) << "refusals are slow";
  EXPECT_LE(Percentile(open.Ttft(), 0.99), ttft_bound) << "admitted requests wait too long";
  // The client kept up with the arrivals (else the offered rate was lower).
  EXPECT_LE(Percentile(open.Lateness(), 0.99), 0.05);
  // The router counted what the client saw.
  EXPECT_EQ(router["stop"] + router["length"], closed.Count(grpc::StatusCode::OK) + ok);
  EXPECT_EQ(router["rejected"], closed.Count(grpc::StatusCode::RESOURCE_EXHAUSTED) + refused);
  EXPECT_EQ(router["cancelled"] + router["error"] + router["unavailable"] + router["invalid"] + router["deadline"], 0);
  EXPECT_EQ(MetricSum(metrics, "strata_pipeline_kv_used_blocks"), 0);
  EXPECT_EQ(MetricSum(metrics, "strata_running_sequences"), 0);
  c.Stop();
}

}  // namespace
}  // namespace strata
