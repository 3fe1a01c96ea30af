// allreduce_bench: the latency of a tensor-parallel all-reduce at decode
// sizes, strata's paths (TimedCommunicator over GlooCommunicator, as the
// data loop calls it: through shared memory, which it picks on one host, and
// forced onto TCP) beside Gloo's own algorithms used the way Gloo's
// benchmark uses them (gloo/benchmark/main.cc: each class algorithm
// constructed once over fixed buffers and run repeatedly; the new-style
// gloo::allreduce with its options set once, separate input and output).
// Every TCP method runs over its own TCP device on 127.0.0.1.
//
// Two ranks, two processes: the launcher serves the rendezvous store
// (TcpStoreServer), re-executes itself as rank 1 and runs rank 0. For each
// size every method is set up, warmed up and checked against the analytic
// sum, then timed in interleaved rounds (each round runs every method in
// turn), so noise from the shared machine lands on all methods alike.
// Rank 0 prints one JSON line per (size, method) and a markdown table.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <gloo/allreduce.h>
#include <gloo/allreduce_bcube.h>
#include <gloo/allreduce_halving_doubling.h>
#include <gloo/allreduce_ring.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/barrier.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/flags.h"
#include "base/status_macros.h"
#include "worker/gloo_communicator.h"
#include "worker/tcp_store.h"
#include "worker/tp_group.h"

namespace strata::worker {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kWorld = 2;

struct Shape {
  int hidden, rows;
};
constexpr Shape kShapes[] = {{2048, 1}, {2048, 4}, {2048, 16}, {2048, 64}, {2048, 256}, {16384, 1}, {16384, 16}};

const base::FlagTable& Table() {
  static const base::FlagTable table(
      "allreduce_bench [flags]",
      "Latency of a 2-rank float32 all-reduce at decode sizes: strata's GlooCommunicator against Gloo's own "
      "algorithms, over TCP on 127.0.0.1.",
      {{"benchmark",
        {base::IntFlag("iters", 400, 1, 1000000,
                       "timed iterations per method per round at <= 64Ki floats (fewer for larger sizes)"),
         base::IntFlag("warmup", 200, 0, 1000000, "untimed iterations per method before the first round"),
         base::IntFlag("rounds", 5, 1, 1000, "interleaved rounds (every method once per round)"),
         base::IntFlag("timeout-ms", 30000, 100, 3600000, "Gloo timeout for the rendezvous and collectives")}},
       {"internal (the launcher passes these to rank 1)",
        {base::IntFlag("rank", -1, -1, kWorld - 1, "-1: launch both ranks; else run this rank"),
         base::IntFlag("store-port", 0, 0, 65535, "the rendezvous store's port on 127.0.0.1")}}});
  return table;
}

// One way to all-reduce n floats, its state set up once. Run() leaves the
// sum of every rank's input() in output().
class Method {
 public:
  virtual ~Method() = default;
  virtual const char* name() const = 0;
  virtual float* input() = 0;
  virtual float* output() = 0;
  virtual absl::Status Run() = 0;
};

class StrataMethod : public Method {
 public:
  StrataMethod(const char* name, Communicator* comm, int64_t n) : name_(name), comm_(comm), buf_(n) {}
  const char* name() const override { return name_; }
  float* input() override { return buf_.data(); }
  float* output() override { return buf_.data(); }
  absl::Status Run() override { return comm_->AllReduceSum(buf_.data(), static_cast<int64_t>(buf_.size())); }

 private:
  const char* name_;
  Communicator* comm_;
  std::vector<float> buf_;
};

// gloo::AllreduceRing and friends: constructed once over one in-place buffer.
template <template <typename> class A>
class ClassMethod : public Method {
 public:
  ClassMethod(const char* name, const std::shared_ptr<gloo::Context>& context, int64_t n)
      : name_(name), buf_(n), algorithm_(new A<float>(context, {buf_.data()}, static_cast<int>(n))) {}
  const char* name() const override { return name_; }
  float* input() override { return buf_.data(); }
  float* output() override { return buf_.data(); }
  absl::Status Run() override {
    try {
      algorithm_->run();
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat(name_, ": ", e.what()));
    }
    return absl::OkStatus();
  }

 private:
  const char* name_;
  std::vector<float> buf_;
  std::unique_ptr<gloo::Algorithm> algorithm_;
};

// gloo::allreduce with its options built once, as NewAllreduceBenchmark does.
class NewStyleMethod : public Method {
 public:
  NewStyleMethod(const char* name, const std::shared_ptr<gloo::Context>& context, int64_t n,
                 gloo::AllreduceOptions::Algorithm algorithm, uint32_t tag)
      : name_(name), in_(n), out_(n), opts_(context) {
    opts_.setInput(in_.data(), static_cast<size_t>(n));
    opts_.setOutput(out_.data(), static_cast<size_t>(n));
    opts_.setAlgorithm(algorithm);
    opts_.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts_.setTag(tag);
  }
  const char* name() const override { return name_; }
  float* input() override { return in_.data(); }
  float* output() override { return out_.data(); }
  absl::Status Run() override {
    try {
      gloo::allreduce(opts_);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat(name_, ": ", e.what()));
    }
    return absl::OkStatus();
  }

 private:
  const char* name_;
  std::vector<float> in_, out_;
  gloo::AllreduceOptions opts_;
};

double Percentile(std::vector<double> v, double p) {  // linear between closest ranks
  std::sort(v.begin(), v.end());
  const double pos = p * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

struct Result {
  std::string method;
  double median_us = 0, p90_us = 0, min_us = 0;
  size_t samples = 0;
};

absl::StatusOr<std::shared_ptr<gloo::Context>> Connect(gloo::rendezvous::Store* store, int rank,
                                                       std::chrono::milliseconds timeout) {
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, kWorld);
    context->setTimeout(timeout);
    gloo::rendezvous::PrefixStore prefixed("bench/gloo", *store);
    context->connectFullMesh(prefixed, device);
    return std::shared_ptr<gloo::Context>(context);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("Gloo context for rank ", rank, ": ", e.what()));
  }
}

absl::Status Barrier(const std::shared_ptr<gloo::Context>& context, uint32_t tag) {
  try {
    gloo::BarrierOptions opts(context);
    opts.setTag(tag);
    gloo::barrier(opts);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("barrier: ", e.what()));
  }
  return absl::OkStatus();
}

// Fills every method's input with rank-dependent values whose sum is exact,
// runs once and checks the result; then zeroes the buffers, so the timed
// in-place runs neither overflow nor differ by data.
absl::Status Check(Method* m, int rank, int64_t n) {
  auto value = [](int64_t i, int r) { return static_cast<float>(i % 61) + 0.25f * static_cast<float>(r + 1); };
  for (int64_t i = 0; i < n; ++i) m->input()[i] = value(i, rank);
  STRATA_RETURN_IF_ERROR(m->Run());
  for (int64_t i = 0; i < n; ++i) {
    float want = 0;
    for (int r = 0; r < kWorld; ++r) want += value(i, r);
    if (m->output()[i] != want) {
      return absl::InternalError(absl::StrCat(m->name(), " of ", n, " floats: element ", i, " is ",
                                              m->output()[i], ", want ", want));
    }
  }
  std::fill_n(m->input(), n, 0.0f);
  std::fill_n(m->output(), n, 0.0f);
  return absl::OkStatus();
}

absl::Status RunRank(const base::ParsedFlags& f, int rank, int port) {
  const std::chrono::milliseconds timeout(f.Int("timeout-ms"));
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<TcpStoreClient> store,
                          TcpStoreClient::Connect("127.0.0.1", port, timeout));
  // strata's paths, as TpGroup builds them (TpGroup itself needs a
  // backend): shared memory (the ranks share this host) and TCP.
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<GlooCommunicator> shm_comm,
                          GlooCommunicator::Create(store.get(), "bench/strata", "127.0.0.1", rank, kWorld, timeout));
  if (!shm_comm->uses_shared_memory()) return absl::FailedPreconditionError("the ranks did not share memory");
  TimedCommunicator strata_shm(std::move(shm_comm));
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<GlooCommunicator> tcp_comm,
                          GlooCommunicator::Create(store.get(), "bench/strata_tcp", "127.0.0.1", rank, kWorld,
                                                   timeout, /*shared_memory=*/false));
  TimedCommunicator strata_tcp(std::move(tcp_comm));
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<gloo::Context> context, Connect(store.get(), rank, timeout));

  const int iters = static_cast<int>(f.Int("iters"));
  const int warmup = static_cast<int>(f.Int("warmup"));
  const int rounds = static_cast<int>(f.Int("rounds"));
  uint32_t tag = 1;
  std::vector<std::string> table;
  for (const Shape& shape : kShapes) {
    const int64_t n = static_cast<int64_t>(shape.hidden) * shape.rows;
    std::vector<std::unique_ptr<Method>> methods;
    methods.push_back(std::make_unique<StrataMethod>("strata_shm", &strata_shm, n));
    methods.push_back(std::make_unique<StrataMethod>("strata_tcp", &strata_tcp, n));
    methods.push_back(std::make_unique<ClassMethod<gloo::AllreduceRing>>("ring", context, n));
    methods.push_back(std::make_unique<ClassMethod<gloo::AllreduceRingChunked>>("ring_chunked", context, n));
    methods.push_back(
        std::make_unique<ClassMethod<gloo::AllreduceHalvingDoubling>>("halving_doubling", context, n));
    methods.push_back(std::make_unique<ClassMethod<gloo::AllreduceBcube>>("bcube", context, n));
    methods.push_back(std::make_unique<NewStyleMethod>("new_ring", context, n,
                                                       gloo::AllreduceOptions::Algorithm::RING, tag++));
    methods.push_back(std::make_unique<NewStyleMethod>("new_bcube", context, n,
                                                       gloo::AllreduceOptions::Algorithm::BCUBE, tag++));
    for (auto& m : methods) {
      STRATA_RETURN_IF_ERROR(Check(m.get(), rank, n));
      for (int i = 0; i < warmup; ++i) STRATA_RETURN_IF_ERROR(m->Run());
    }
    const int per_round = std::max(20, static_cast<int>(iters * std::min(1.0, 65536.0 / n)));
    std::vector<std::vector<double>> samples(methods.size());
    for (int round = 0; round < rounds; ++round) {
      for (size_t k = 0; k < methods.size(); ++k) {
        STRATA_RETURN_IF_ERROR(Barrier(context, tag++));
        for (int i = 0; i < per_round; ++i) {
          const auto start = Clock::now();
          STRATA_RETURN_IF_ERROR(methods[k]->Run());
          samples[k].push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
        }
      }
    }
    if (rank != 0) continue;
    std::vector<Result> results;
    for (size_t k = 0; k < methods.size(); ++k) {
      Result r;
      r.method = methods[k]->name();
      r.median_us = Percentile(samples[k], 0.5);
      r.p90_us = Percentile(samples[k], 0.9);
      r.min_us = *std::min_element(samples[k].begin(), samples[k].end());
      r.samples = samples[k].size();
      results.push_back(r);
      std::cout << absl::StrFormat(
                       "{\"hidden\":%d,\"rows\":%d,\"elements\":%d,\"bytes\":%d,\"method\":\"%s\",\"ranks\":%d,"
                       "\"samples\":%d,\"median_us\":%.1f,\"p90_us\":%.1f,\"min_us\":%.1f}",
                       shape.hidden, shape.rows, n, n * 4, r.method, kWorld, r.samples, r.median_us, r.p90_us,
                       r.min_us)
                << std::endl;
    }
    const Result* best = &results[2];
    for (size_t k = 2; k < results.size(); ++k) {
      if (results[k].median_us < best->median_us) best = &results[k];
    }
    std::string row =
        absl::StrFormat("| %d x %d | %d KiB | %.1f (%.1f) | %.1f (%.1f) |", shape.hidden, shape.rows, n * 4 / 1024,
                        results[0].median_us, results[0].p90_us, results[1].median_us, results[1].p90_us);
    for (size_t k = 2; k < results.size(); ++k) absl::StrAppendFormat(&row, " %.1f |", results[k].median_us);
    absl::StrAppendFormat(&row, " %s | %.2f | %.2f |", best->method, results[0].median_us / best->median_us,
                          results[1].median_us / best->median_us);
    table.push_back(row);
  }
  if (rank == 0) {
    std::cout << "\nMedian latency in microseconds (strata also p90), " << kWorld
              << " ranks, one process each; strata_shm through shared memory, the rest TCP on 127.0.0.1:\n\n"
              << "| hidden x rows | bytes | strata_shm | strata_tcp | ring | ring_chunked | halving_doubling | bcube "
                 "| new_ring | new_bcube | best Gloo | shm / best | tcp / best |\n"
              << "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const std::string& row : table) std::cout << row << "\n";
  }
  return Barrier(context, tag++);
}

// Serves the store, starts rank 1 as a child (this binary again) and runs
// rank 0; the exit status is the worse of the two.
int Launch(const std::vector<std::string>& args) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  if (!server.ok()) {
    std::cerr << "allreduce_bench: " << server.status() << "\n";
    return 1;
  }
  std::vector<std::string> child_args = {"allreduce_bench"};
  child_args.insert(child_args.end(), args.begin(), args.end());
  child_args.push_back("--rank=1");
  child_args.push_back(absl::StrCat("--store-port=", (*server)->port()));
  std::vector<char*> argv;
  for (std::string& a : child_args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t child = fork();
  if (child < 0) {
    perror("allreduce_bench: fork");
    return 1;
  }
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execv("/proc/self/exe", argv.data());
    perror("allreduce_bench: exec");
    _exit(127);
  }
  auto parsed = Table().Parse(args);
  absl::Status s = RunRank(*parsed, 0, (*server)->port());
  if (!s.ok()) {
    std::cerr << "allreduce_bench rank 0: " << s << "\n";
    kill(child, SIGKILL);
  }
  int wstatus = 0;
  waitpid(child, &wstatus, 0);
  const bool child_ok = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
  return s.ok() && child_ok ? 0 : 1;
}

}  // namespace
}  // namespace strata::worker

int main(int argc, char** argv) {
  using strata::worker::Table;
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (strata::base::WantsHelp(args)) {
    std::cout << Table().Help();
    return 0;
  }
  auto flags = Table().Parse(args);
  if (!flags.ok()) {
    std::cerr << "allreduce_bench: " << flags.status().message() << "\n";
    return 2;
  }
  const int rank = static_cast<int>(flags->Int("rank"));
  if (rank < 0) return strata::worker::Launch(args);
  absl::Status s = strata::worker::RunRank(*flags, rank, static_cast<int>(flags->Int("store-port")));
  if (!s.ok()) {
    std::cerr << "allreduce_bench rank " << rank << ": " << s << "\n";
    return 1;
  }
  return 0;
}
