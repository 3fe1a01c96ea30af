// What the cluster suites share (router_test, fault_suite_test, soak,
// overload): a `strata up` cluster started with a ready file (the router's
// and every worker's pid and /metrics address), with security on under
// STRATA_SECURE_CLUSTER, the router's health, a scrape of any process's
// /metrics summed by name and labels,
// a process's resident memory, open descriptors and threads from /proc,
// and a streaming Generate call that may cancel itself after some tokens.
//
// Every process a suite starts is stopped when its UpCluster goes away,
// also after a failed assertion: the destructor of base::Process SIGKILLs
// `strata up`, whose children have PR_SET_PDEATHSIG. Start the cluster on
// the test's main thread (the death signal follows the spawning thread).
#ifndef STRATA_TESTS_CLUSTER_SUITE_CLUSTER_H_
#define STRATA_TESTS_CLUSTER_SUITE_CLUSTER_H_

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/process.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "strata/v1/inference.grpc.pb.h"
#include "tests/cluster/test_paths.h"
#include "testdata/grpc_health.grpc.pb.h"

namespace strata::cluster_test {

using SuiteClock = std::chrono::steady_clock;

inline double SecondsSince(SuiteClock::time_point t) {
  return std::chrono::duration<double>(SuiteClock::now() - t).count();
}

// An integer from the environment (a longer soak by hand), or `fallback`.
inline int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 10) : fallback;
}

// GET http://ADDRESS/metrics ("" when it does not answer).
inline std::string Scrape(const std::string& address) {
  const size_t colon = address.rfind(':');
  httplib::Client c(address.substr(0, colon), std::atoi(address.c_str() + colon + 1));
  c.set_connection_timeout(2);
  c.set_read_timeout(5);
  auto r = c.Get("/metrics");
  return r && r->status == 200 ? r->body : "";
}

// The sum of every sample of `name` whose labels include each of `want`
// (label="value" pairs), in Prometheus text format; -1 when none matches.
inline double MetricSum(const std::string& text, const std::string& name,
                        const std::map<std::string, std::string>& want = {}) {
  std::istringstream in(text);
  std::string line;
  double sum = 0;
  bool found = false;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.compare(0, name.size(), name) != 0) continue;
    const char after = line.size() > name.size() ? line[name.size()] : '\0';
    if (after != '{' && after != ' ') continue;
    bool match = true;
    for (const auto& [k, v] : want) {
      if (line.find(absl::StrCat(k, "=\"", v, "\"")) == std::string::npos) match = false;
    }
    if (!match) continue;
    const size_t space = line.rfind(' ');
    sum += std::atof(line.c_str() + space + 1);
    found = true;
  }
  return found ? sum : -1;
}

// A process's footprint, from /proc/PID/status (VmRSS, Threads) and the
// entries of /proc/PID/fd.
struct ProcFootprint {
  int64_t rss_kib = -1;
  int64_t fds = -1;
  int64_t threads = -1;
};

inline ProcFootprint ReadFootprint(int pid) {
  ProcFootprint f;
  std::istringstream status(Slurp(absl::StrCat("/proc/", pid, "/status")));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) f.rss_kib = std::atoll(line.c_str() + 6);
    if (line.rfind("Threads:", 0) == 0) f.threads = std::atoll(line.c_str() + 8);
  }
  if (DIR* d = opendir(absl::StrCat("/proc/", pid, "/fd").c_str())) {
    f.fds = 0;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++f.fds;
    }
    closedir(d);
  }
  return f;
}

// One process of the cluster: its name ("router", "worker_p0_s1_r0"), pid
// and /metrics address.
struct ClusterProcess {
  std::string name;
  int pid = -1;
  std::string metrics;
};

class UpCluster {
 public:
  UpCluster() = default;
  UpCluster(const UpCluster&) = delete;
  UpCluster& operator=(const UpCluster&) = delete;
  virtual ~UpCluster() { Stop(); }

  // Starts `strata up --model MODEL FLAGS...` and returns once its ready
  // file is written (every replica serving), within `timeout`. With
  // STRATA_SECURE_CLUSTER set (router_secure_test), security is on: TLS,
  // mutual TLS and a token, which the client channel uses.
  void Start(const std::string& model, const std::vector<std::string>& flags,
             std::chrono::seconds timeout = std::chrono::seconds(180)) {
    static int counter = 0;  // a cluster of its own per start: no earlier ready file is read
    dir_ = absl::StrCat(TempDir(), "/suite_cluster_", getpid(), "_", counter++);
    ready_ = dir_ + ".ready";
    std::remove(ready_.c_str());
    std::vector<std::string> argv = {BinDir() + "/tools/strata", "up", "--model", model, "--bin-dir", BinDir(),
                                     "--log-dir", dir_, "--ready-file", ready_, "--metrics-port", "0"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const bool secure = std::getenv("STRATA_SECURE_CLUSTER") != nullptr;
    if (secure) argv.push_back("--tls");
    base::ProcessOptions o;
    o.argv = argv;
    o.log = up_log();
    auto p = base::Process::Spawn(std::move(o));
    ASSERT_TRUE(p.ok()) << p.status();
    up_.emplace(std::move(*p));
    const auto deadline = SuiteClock::now() + timeout;
    while (access(ready_.c_str(), F_OK) != 0) {
      ASSERT_TRUE(up_->Running()) << "strata up exited:\n" << Slurp(up_log());
      ASSERT_LT(SuiteClock::now(), deadline) << "strata up not ready:\n" << Slurp(up_log());
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    info_ = nlohmann::json::parse(Slurp(ready_));
    const std::string address = info_["address"].get<std::string>();
    if (secure) {
      grpc::SslCredentialsOptions tls;
      tls.pem_root_certs = Slurp(info_["ca"].get<std::string>());
      std::string token = Slurp(info_["token_file"].get<std::string>());
      while (!token.empty() && token.back() == '\n') token.pop_back();
      channel_ = grpc::CreateChannel(
          address, grpc::CompositeChannelCredentials(grpc::SslCredentials(tls), grpc::AccessTokenCredentials(token)));
    } else {
      channel_ = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    }
    stub_ = v1::Inference::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
    processes_.clear();
    processes_.push_back({"router", info_["router_pid"].get<int>(), info_["metrics_address"].get<std::string>()});
    for (const auto& w : info_["workers"]) {
      processes_.push_back({w["name"].get<std::string>(), w["pid"].get<int>(), w["metrics_address"].get<std::string>()});
    }
  }

  // Ctrl-C, as a user stops it (the router drains first); SIGKILL by the
  // destructor of base::Process if it does not stop within 60 s (its
  // children die with it: base::ProcessOptions::parent_death_signal).
  virtual void Stop() {
    if (!up_.has_value()) return;
    up_->Signal(SIGINT);
    EXPECT_TRUE(up_->Wait(std::chrono::seconds(60)).ok()) << "strata up did not stop";
    up_.reset();
  }

  // Whether strata up and every child in the ready file are still running.
  bool AllRunning() {
    if (!up_.has_value() || !up_->Running()) return false;
    for (const ClusterProcess& p : processes_) {
      if (kill(p.pid, 0) != 0) return false;
    }
    return true;
  }

  // The router's grpc.health.v1 answer: SERVING (a replica is up). A
  // router that does not listen fails at once; 5 s lets a new channel's
  // TLS handshake finish on a loaded machine (router_secure_test's first
  // call once took longer than 2 s in CI).
  bool Healthy() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    return health_->Check(&ctx, req, &resp).ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  }

  // The router's /metrics ("" when it does not answer, after 3 tries).
  std::string RouterMetrics() const {
    for (int attempt = 0; attempt < 3; ++attempt) {
      std::string m = Scrape(processes_[0].metrics);
      if (!m.empty()) return m;
    }
    return "";
  }
  // The first series of `name` in the router's /metrics; -1 when absent.
  double MetricValue(const std::string& name) const {
    const std::string m = "\n" + RouterMetrics();
    size_t at = m.find("\n" + name + "{");
    if (at == std::string::npos) return -1;
    at = m.find("} ", at);
    return std::atof(m.c_str() + at + 2);
  }

  const std::vector<ClusterProcess>& processes() const { return processes_; }
  const nlohmann::json& info() const { return info_; }
  v1::Inference::Stub* stub() { return stub_.get(); }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  std::string log_dir() const { return dir_; }
  std::string up_log() const { return dir_ + ".up.log"; }
  int router_pid() const { return info_["router_pid"].get<int>(); }

 private:
  std::optional<base::Process> up_;
  std::string dir_, ready_;
  nlohmann::json info_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::vector<ClusterProcess> processes_;
};

// One streaming Generate call as the client saw it; times in seconds from
// when it was sent.
struct CallResult {
  grpc::StatusCode code = grpc::StatusCode::OK;
  int64_t tokens = 0;
  double ttft = -1;  // -1: no token came
  double latency = 0;
  bool cancelled_by_us = false;
};

// Sends `req` with a `timeout_ms` deadline and reads every message; with
// `cancel_after` >= 0 the client cancels the call once it has that many
// tokens (0: at once, before reading anything).
inline CallResult StreamCall(v1::Inference::Stub* stub, const v1::GenerateRequest& req, int64_t cancel_after,
                             int64_t timeout_ms) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  const SuiteClock::time_point start = SuiteClock::now();
  CallResult r;
  auto reader = stub->Generate(&ctx, req);
  if (cancel_after == 0) {
    ctx.TryCancel();
    r.cancelled_by_us = true;
  }
  v1::GenerateResponse m;
  while (reader->Read(&m)) {
    if (m.tokens_size() == 0) continue;
    if (r.ttft < 0) r.ttft = SecondsSince(start);
    r.tokens += m.tokens_size();
    if (!r.cancelled_by_us && cancel_after > 0 && r.tokens >= cancel_after) {
      ctx.TryCancel();
      r.cancelled_by_us = true;
    }
  }
  r.code = reader->Finish().error_code();
  r.latency = SecondsSince(start);
  return r;
}

// "OK", "CANCELLED", ... for the tables.
inline std::string CodeName(grpc::StatusCode c) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int i = static_cast<int>(c);
  return i >= 0 && i < 17 ? kNames[i] : absl::StrCat("CODE_", i);
}

// {"OK": 12, "CANCELLED": 3} as "OK 12, CANCELLED 3".
inline std::string FormatCodes(const std::map<std::string, int64_t>& codes) {
  std::string out;
  for (const auto& [name, n] : codes) absl::StrAppend(&out, out.empty() ? "" : ", ", name, " ", n);
  return out;
}

// The p-th quantile (p in [0, 1]), nearest rank; NaN for none.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, i == 0 ? 0 : i - 1)];
}

// The machine, for the tables: lscpu's model name and the CPUs online.
inline std::string MachineLine() {
  std::string model = "unknown CPU";
  std::istringstream in(Slurp("/proc/cpuinfo"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return absl::StrCat(model, ", ", std::thread::hardware_concurrency(), " CPUs");
}

}  // namespace strata::cluster_test

#endif  // STRATA_TESTS_CLUSTER_SUITE_CLUSTER_H_
