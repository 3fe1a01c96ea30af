// The multi-process pipeline: 2 stages x 2 TP ranks of strata-worker, each
// its own process, driven over the real UCX data plane by this test (it
// plays the router: sends StepPlans to stage 0 and receives StepResults).
// The logits (f32 weights and KV) must match the single-process stage
// executor within 1e-4 relative, and the greedy tokens exactly, through a
// batched prefill and 32 decode steps, over UCX shared memory and over TCP.
// Malformed messages and bad plans are refused while the workers keep
// serving, and SIGTERM drains every worker to exit 0.
//
// With STRATA_NETNS_HOSTS=ip0,ip1 STRATA_NETNS_NAMES=ns0,ns1
// STRATA_DRIVER_HOST=ip (tests/cluster/netns_test.sh), stage s runs inside
// network namespace ns_s at address ip_s, so nothing can rely on loopback or
// shared memory between stages.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/net.h"
#include "base/process.h"
#include "gtest/gtest.h"
#include "tests/cluster/test_paths.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/reference/sampling.h"
#include "model/checkpoint.h"
#include "model/file_system.h"
#include "model/make_model.h"
#include "nlohmann/json.hpp"
#include "transport/ucx_transport.h"
#include "worker/local_engine.h"
#include "worker/stage_executor.h"

namespace strata {
namespace {

using cluster_test::BinDir;
using cluster_test::Slurp;
using cluster_test::TempDir;

using std::chrono::milliseconds;
using transport::MessageType;

constexpr int kStages = 2;
constexpr int kTp = 2;
constexpr int kBlocks = 64;
constexpr int kBlockSize = 4;

std::string WorkerBinary() { return BinDir() + "/worker/strata-worker"; }

struct Netns {
  bool on = false;
  std::vector<std::string> hosts, names;
  std::string driver_host;
};

Netns NetnsFromEnv() {
  Netns n;
  const char* hosts = std::getenv("STRATA_NETNS_HOSTS");
  const char* names = std::getenv("STRATA_NETNS_NAMES");
  const char* driver = std::getenv("STRATA_DRIVER_HOST");
  if (hosts == nullptr || names == nullptr || driver == nullptr) return n;
  n.on = true;
  n.hosts = absl::StrSplit(hosts, ',');
  n.names = absl::StrSplit(names, ',');
  n.driver_host = driver;
  return n;
}

class PipelineTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    netns_ = NetnsFromEnv();
    if (netns_.on && std::string(GetParam()) != "tcp") GTEST_SKIP() << "namespaces run the TCP case only";
    dir_ = absl::StrCat(TempDir(), "/pipeline_", GetParam(), "_", getpid());
    model::MakeModelOptions o;
    o.config = *model::LlamaPreset("tiny");
    o.dtype = model::DType::kF32;
    o.seed = 21;
    o.shards = 2;
    ASSERT_TRUE(model::WriteRandomModel(model::PosixFileSystem(), dir_ + "/model", o).ok());
    setenv("UCX_TLS", Tls().c_str(), 1);
  }

  void TearDown() override {
    workers_.clear();  // kills any worker still running
    unsetenv("UCX_TLS");
  }

  bool SharedMemory() const { return std::string(GetParam()) == "shm"; }
  std::string Tls() const { return SharedMemory() ? "sm,tcp,self" : "tcp,self"; }
  std::string StageHost(int s) const { return netns_.on ? netns_.hosts[s] : "127.0.0.1"; }

  // Starts the 4 workers and the driver's transport; fills data addresses.
  void StartCluster() {
    transport::UcxOptions uo;
    uo.listen = {netns_.on ? "0.0.0.0" : "127.0.0.1", 0};
    uo.peer_failure_detection = !SharedMemory();
    auto t = transport::UcxTransport::Create(uo);
    ASSERT_TRUE(t.ok()) << t.status();
    driver_ = std::move(*t);
    const int driver_port = transport::ParseHostPort(driver_->address(), "driver")->port;
    const std::string result_address =
        absl::StrCat(netns_.on ? netns_.driver_host : "127.0.0.1", ":", driver_port);
    int data_port[kStages][kTp], store_port[kStages];
    for (int s = 0; s < kStages; ++s) {
      store_port[s] = netns_.on ? 29400 + s : base::PickFreePort();
      for (int r = 0; r < kTp; ++r) data_port[s][r] = netns_.on ? 29410 + r : base::PickFreePort();
    }
    for (int s = 0; s < kStages; ++s) {
      for (int r = 0; r < kTp; ++r) {
        const std::string ready = absl::StrCat(dir_, "/ready_", s, "_", r);
        std::vector<std::string> args = {WorkerBinary(),
                                         "--model", dir_ + "/model",
                                         "--stage", absl::StrCat(s),
                                         "--num-stages", absl::StrCat(kStages),
                                         "--tp-rank", absl::StrCat(r),
                                         "--tp-size", absl::StrCat(kTp),
                                         "--tp-store", absl::StrCat(StageHost(s), ":", store_port[s]),
                                         "--backend", "cpu",
                                         "--kv-dtype", "f32",
                                         "--threads", "1",
                                         "--host", StageHost(s),
                                         "--data-port", absl::StrCat(data_port[s][r]),
                                         "--metrics-port", "0",
                                         "--kv-blocks", absl::StrCat(kBlocks),
                                         "--block-size", absl::StrCat(kBlockSize),
                                         "--result-address", result_address,
                                         "--ucx-peer-errors", SharedMemory() ? "false" : "true",
                                         "--ready-file", ready};
        if (s + 1 < kStages) {
          args.push_back("--next-stage");
          args.push_back(absl::StrCat(StageHost(s + 1), ":", data_port[s + 1][r]));
        }
        base::ProcessOptions o;
        o.argv = std::move(args);
        o.log = absl::StrCat(dir_, "/worker_", s, "_", r, ".log");
        if (netns_.on) o.netns = netns_.names[s];
        auto worker = base::Process::Spawn(std::move(o));
        ASSERT_TRUE(worker.ok()) << worker.status();
        workers_.push_back(std::move(*worker));
        ready_files_.push_back(ready);
      }
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    for (size_t i = 0; i < ready_files_.size(); ++i) {
      while (access(ready_files_[i].c_str(), F_OK) != 0) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "worker " << i << " not ready:\n"
                                                              << Slurp(workers_[i].log());
        ASSERT_TRUE(workers_[i].Running()) << "worker " << i << " exited:\n" << Slurp(workers_[i].log());
        std::this_thread::sleep_for(milliseconds(20));
      }
      ready_.push_back(nlohmann::json::parse(Slurp(ready_files_[i])));
      EXPECT_EQ(ready_.back()["kv_blocks"].get<int64_t>(), kBlocks);
    }
    for (int r = 0; r < kTp; ++r) {
      auto hp = transport::ParseHostPort(ready_[r]["data_address"].get<std::string>(), "stage 0");
      ASSERT_TRUE(hp.ok());
      auto peer = driver_->Connect(*hp);
      ASSERT_TRUE(peer.ok()) << peer.status();
      stage0_.push_back(*peer);
    }
  }

  absl::StatusOr<transport::StepResult> Step(const transport::StepPlan& plan) {
    const std::string bytes = transport::EncodePlan(plan);
    transport::WireHeader h;
    h.type = static_cast<uint16_t>(MessageType::kStepPlan);
    h.step_id = plan.step_id;
    h.plan_bytes = static_cast<uint32_t>(bytes.size());
    for (int peer : stage0_) {
      absl::Status s = driver_->Send(peer, h, {{bytes.data(), bytes.size()}}, milliseconds(10000));
      if (!s.ok()) return s;
    }
    auto m = driver_->Receive(milliseconds(30000));
    if (!m.ok()) return m.status();
    if (m->header.type != static_cast<uint16_t>(MessageType::kStepResult)) {
      return absl::InternalError("expected a StepResult");
    }
    if (m->header.src_stage != kStages - 1 && m->header.src_stage != 0) return absl::InternalError("unexpected source");
    return transport::DecodeResult(m->payload(), m->header.payload_bytes);
  }

  Netns netns_;
  std::string dir_;
  std::vector<base::Process> workers_;
  std::vector<std::string> ready_files_;
  std::vector<nlohmann::json> ready_;
  std::unique_ptr<transport::UcxTransport> driver_;
  std::vector<int> stage0_;
};

struct Seq {
  uint64_t id;
  std::vector<int32_t> prompt;
  std::vector<int32_t> blocks;
  int64_t cached = 0;
  int32_t next = -1;  // token to feed next step
};

TEST_P(PipelineTest, MatchesTheSingleProcessEngine) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());

  // The single-process reference: the whole model in one stage executor.
  auto ckpt = model::Checkpoint::Open(model::PosixFileSystem(), dir_ + "/model");
  ASSERT_TRUE(ckpt.ok());
  kernels::cpu::CpuBackend backend({1, kernels::cpu::BestIsa(), model::DType::kF32});
  auto whole = worker::StageExecutor::Load(&backend, **ckpt, worker::StageSpec::Whole((*ckpt)->config()));
  ASSERT_TRUE(whole.ok());
  auto cache = backend.AllocateKvCache((*whole)->KvShape(kBlocks, kBlockSize));
  ASSERT_TRUE(cache.ok());
  const int64_t vocab = (*ckpt)->config().vocab_size;

  std::vector<Seq> seqs = {{11, {1, 17, 300, 42, 9, 511, 77, 5, 123, 64, 2, 88, 401}, {}, 0, -1},
                           {12, {1, 5, 6, 7, 250, 251, 3}, {}, 0, -1}};
  for (int i = 0; i < 12; ++i) seqs[0].blocks.push_back(2 * i + 1);  // interleaved block tables
  for (int i = 0; i < 12; ++i) seqs[1].blocks.push_back(2 * i + 2);

  float worst = 0;
  int not_greedy = 0;  // sampled tokens that are not the argmax
  for (int step = 0; step <= 32; ++step) {
    transport::StepPlan plan;
    plan.step_id = static_cast<uint64_t>(step + 1);
    plan.return_logits = true;
    kernels::StepLayout layout;
    std::vector<int64_t> logit_rows;
    int64_t row = 0;
    for (Seq& s : seqs) {
      transport::PlanSequence ps;
      ps.seq_id = s.id;
      const std::vector<int32_t> ids = step == 0 ? s.prompt : std::vector<int32_t>{s.next};
      ps.num_tokens = static_cast<int32_t>(ids.size());
      ps.cached_tokens = static_cast<int32_t>(s.cached);
      ps.block_table = s.blocks;
      ps.sample = true;
      ps.logprobs = 2;
      if (s.id == 12) {  // the second sequence samples, seeded
        ps.sampling.temperature = 0.8f;
        ps.sampling.top_k = 50;
        ps.sampling.top_p = 0.9f;
        ps.sampling.seed = 1234;
        ps.sampling.step = static_cast<uint64_t>(step);
      }
      plan.sequences.push_back(ps);
      plan.token_ids.insert(plan.token_ids.end(), ids.begin(), ids.end());
      layout.sequences.push_back({ps.num_tokens, ps.cached_tokens, 0, s.blocks});
      row += ps.num_tokens;
      logit_rows.push_back(row - 1);
    }
    std::vector<float> want;
    ASSERT_TRUE((*whole)->Forward(layout, plan.token_ids, {}, logit_rows, cache->get(), &want).ok());
    auto got = Step(plan);
    ASSERT_TRUE(got.ok()) << "step " << step << ": " << got.status();
    ASSERT_TRUE(got->error.empty()) << got->error;
    ASSERT_EQ(got->step_id, plan.step_id);
    ASSERT_EQ(got->sequences.size(), seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      const transport::SequenceResult& r = got->sequences[i];
      ASSERT_EQ(r.seq_id, seqs[i].id);
      ASSERT_EQ(static_cast<int64_t>(r.logits.size()), vocab);
      const float* w = want.data() + i * vocab;
      float scale = 0;
      for (int64_t v = 0; v < vocab; ++v) scale = std::max(scale, std::fabs(w[v]));
      for (int64_t v = 0; v < vocab; ++v) {
        const float rel = std::fabs(r.logits[v] - w[v]) / scale;
        worst = std::max(worst, rel);
        ASSERT_LE(rel, 1e-4f) << "step " << step << " seq " << i << " token " << v;
      }
      // The reference sampler on the single-process logits picks the same
      // token (greedy for sequence 11, seeded top-k/top-p for 12).
      const transport::Sampling& sp = plan.sequences[i].sampling;
      const int32_t expected =
          kernels::reference::Sample(w, vocab, {sp.temperature, sp.top_k, sp.top_p, sp.seed, sp.step});
      EXPECT_EQ(r.token, expected) << "step " << step << " seq " << i;
      ASSERT_EQ(r.top.size(), 2u);
      if (i == 0) EXPECT_EQ(r.top[0].token, r.token);  // greedy: the best is the chosen
      EXPECT_LE(r.logprob, 0.0f);
      seqs[i].cached += step == 0 ? static_cast<int64_t>(seqs[i].prompt.size()) : 1;
      seqs[i].next = expected;
      if (expected != worker::Argmax(w, vocab)) ++not_greedy;
    }
  }
  std::cout << "worst relative logit difference over 33 steps: " << worst << "; " << not_greedy
            << " sampled tokens were not the argmax\n";
  EXPECT_GT(not_greedy, 0) << "the seeded sampler never left the argmax: the sampling check proves nothing";

  // Bad input: a malformed message and a plan with an id outside the
  // vocabulary. The first is dropped, the second answered with an error,
  // and the pipeline keeps serving.
  transport::WireHeader bad;
  bad.version = 7;
  bad.type = static_cast<uint16_t>(MessageType::kStepPlan);
  ASSERT_TRUE(driver_->SendRawForTest(stage0_[0], std::string(reinterpret_cast<const char*>(&bad), sizeof(bad)),
                                      "xyz", milliseconds(5000)).ok());
  transport::StepPlan oob;
  oob.step_id = 100;
  oob.sequences.resize(1);
  oob.sequences[0].seq_id = 99;
  oob.sequences[0].num_tokens = 1;
  oob.sequences[0].block_table = {40};
  oob.sequences[0].sample = true;
  oob.token_ids = {static_cast<int32_t>(vocab)};
  auto refused = Step(oob);
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_NE(refused->error.find("vocabulary"), std::string::npos) << refused->error;
  oob.step_id = 101;
  oob.token_ids = {3};
  oob.sequences[0].block_table = {kBlocks + 5};  // outside the pool
  refused = Step(oob);
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_FALSE(refused->error.empty());
  oob.step_id = 102;
  oob.sequences[0].block_table = {40};
  auto fine = Step(oob);
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_TRUE(fine->error.empty()) << fine->error;
  EXPECT_GE(fine->sequences[0].token, 0);

  // Metrics are served.
  for (const auto& j : ready_) EXPECT_FALSE(j["metrics_address"].get<std::string>().empty());

  // SIGTERM drains: every worker exits 0.
  for (base::Process& p : workers_) p.Signal(SIGTERM);
  for (base::Process& p : workers_) {
    auto status = p.Wait(milliseconds(20000));
    EXPECT_TRUE(status.ok() && *status == 0) << Slurp(p.log());
  }
}

INSTANTIATE_TEST_SUITE_P(Ucx, PipelineTest, ::testing::Values("shm", "tcp"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace strata
