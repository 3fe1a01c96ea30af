// The whole system through its public gRPC API: `strata up` starts a router
// and strata-worker processes; the tests call strata.v1.Inference the way a
// client would. A 2-stage x 2-rank cluster gives the single-process
// engine's greedy tokens; 64 concurrent streams each get exactly the tokens
// they get alone; a small KV pool preempts and still gives the same tokens;
// cancellation, deadlines, a full queue and bad input get their status
// codes while the server stays healthy; killing a worker ends in-flight
// requests with UNAVAILABLE and the pipeline comes back when it restarts;
// requests sharing a prefix take it from the cache and give the same tokens;
// registrations whose data address never answers stall nothing.
// router_secure_test runs the same suite with `strata up --tls` (TLS and a
// bearer token on the public port, mutual TLS on the control plane).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/net.h"
#include "base/process.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/checkpoint.h"
#include "model/make_model.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "strata/v1/inference.grpc.pb.h"
#include "tests/cluster/suite_cluster.h"
#include "tests/cluster/test_paths.h"
#include "strata/v1/worker.grpc.pb.h"
#include "testdata/grpc_health.grpc.pb.h"
#include "testdata/grpc_reflection.grpc.pb.h"
#include "worker/local_engine.h"

namespace strata {
namespace {

using cluster_test::BinDir;
using cluster_test::Slurp;
using cluster_test::TempDir;

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Starts argv with its output in `log`; the test fails if it cannot start.
base::Process SpawnLogged(std::vector<std::string> argv, const std::string& log,
                          const std::vector<std::pair<std::string, std::string>>& env = {}) {
  base::ProcessOptions o;
  o.argv = std::move(argv);
  o.log = log;
  o.env = env;
  auto p = base::Process::Spawn(std::move(o));
  EXPECT_TRUE(p.ok()) << p.status();
  return std::move(*p);
}

// The suites' cluster (suite_cluster.h) with this suite's defaults: the
// CPU backend with an f32 KV cache, and workers that strata up does not
// restart (the fault tests kill workers and restart them by hand).
class Cluster : public cluster_test::UpCluster {
 public:
  void Start(const std::string& model, const std::vector<std::string>& flags) {
    std::vector<std::string> all = {"--backend", "cpu", "--kv-dtype", "f32", "--restart-workers=false"};
    all.insert(all.end(), flags.begin(), flags.end());
    UpCluster::Start(model, all, std::chrono::seconds(120));
  }
  // The router's /metrics after a newline, so every line starts with one.
  std::string Metrics() const { return "\n" + RouterMetrics(); }
};

struct Outcome {
  std::vector<int32_t> tokens;
  grpc::Status status;
  v1::GenerateResponse::FinishReason finish = v1::GenerateResponse::FINISH_REASON_UNSPECIFIED;
};

v1::GenerateRequest Request(const std::vector<int32_t>& prompt, int max_tokens) {
  v1::GenerateRequest r;
  for (int32_t t : prompt) r.add_prompt_ids(t);
  r.mutable_stop()->set_max_tokens(max_tokens);
  r.mutable_stop()->set_ignore_eos(true);
  return r;
}

Outcome Call(v1::Inference::Stub* stub, const v1::GenerateRequest& req, int timeout_ms = 60000) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(timeout_ms));
  auto reader = stub->Generate(&ctx, req);
  Outcome o;
  v1::GenerateResponse m;
  while (reader->Read(&m)) {
    for (const auto& t : m.tokens()) o.tokens.push_back(t.token_id());
    if (m.finish_reason() != v1::GenerateResponse::FINISH_REASON_UNSPECIFIED) o.finish = m.finish_reason();
  }
  o.status = reader->Finish();
  return o;
}

std::vector<int32_t> Prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back((i * 37 + salt * 101 + 7) % 512);
  return p;
}

class RouterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = absl::StrCat(TempDir(), "/router_model");
    model::MakeModelOptions o;
    o.config = *model::LlamaPreset("tiny");
    o.dtype = model::DType::kF32;
    o.seed = 5;
    ASSERT_TRUE(model::WriteRandomModel(model::PosixFileSystem(), model_, o).ok());
  }
  static std::vector<int32_t> Alone(const std::vector<int32_t>& prompt, int max_tokens) {
    auto ckpt = model::Checkpoint::Open(model::PosixFileSystem(), model_);
    kernels::cpu::CpuBackend backend({1, kernels::cpu::BestIsa(), model::DType::kF32});
    auto engine = worker::LocalEngine::Create(&backend, **ckpt, {});
    worker::GenerateRequest r;
    r.prompt = prompt;
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    return (*engine)->Generate(r)->tokens;
  }
  static inline std::string model_;
};

TEST_F(RouterTest, TwoStagesTwoRanksServeLikeTheSingleProcessEngine) {
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "2", "--tp", "2"}));
  EXPECT_TRUE(c.Healthy());
  {
    grpc::ClientContext ctx;
    v1::ListModelsResponse lm;
    ASSERT_TRUE(c.stub()->ListModels(&ctx, v1::ListModelsRequest(), &lm).ok());
    ASSERT_EQ(lm.models_size(), 1);
    EXPECT_EQ(lm.models(0).pipelines_up(), 1);
    ASSERT_EQ(lm.models(0).info().stages_size(), 2);
    EXPECT_EQ(lm.models(0).info().stages(1).first_layer(), 2);
    EXPECT_EQ(lm.models(0).info().stages(0).tp_size(), 2);
    EXPECT_EQ(lm.models(0).info().shape().vocab_size(), 512);
  }
  // Greedy tokens equal the single-process engine's.
  for (int salt = 0; salt < 4; ++salt) {
    const auto prompt = Prompt(3 + salt * 9, salt);
    Outcome o = Call(c.stub(), Request(prompt, 12));
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(o.finish, v1::GenerateResponse::LENGTH);
    EXPECT_EQ(o.tokens, Alone(prompt, 12)) << "prompt " << salt;
  }
  // 64 concurrent streams, mixed lengths: each as it is alone.
  std::vector<v1::GenerateRequest> reqs;
  std::vector<std::vector<int32_t>> alone;
  for (int i = 0; i < 64; ++i) {
    reqs.push_back(Request(Prompt(1 + (i * 7) % 40, i), 1 + (i * 5) % 24));
    alone.push_back(Call(c.stub(), reqs.back()).tokens);
  }
  std::vector<std::future<Outcome>> futures;
  for (int i = 0; i < 64; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] { return Call(c.stub(), reqs[i]); }));
  }
  for (int i = 0; i < 64; ++i) {
    Outcome o = futures[i].get();
    ASSERT_TRUE(o.status.ok()) << i << ": " << o.status.error_message();
    EXPECT_EQ(o.tokens, alone[i]) << "stream " << i;
    EXPECT_EQ(static_cast<int>(o.tokens.size()), reqs[i].stop().max_tokens());
  }
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(c.MetricValue("strata_kv_cache_usage_ratio"), 0.0) << c.Metrics();
  EXPECT_EQ(c.MetricValue("strata_running_sequences"), 0.0);

  // Server reflection lists the public API, so generic tools can call it.
  {
    auto refl = grpc::reflection::v1alpha::ServerReflection::NewStub(c.channel());
    grpc::ClientContext ctx;
    auto rw = refl->ServerReflectionInfo(&ctx);
    grpc::reflection::v1alpha::ServerReflectionRequest rq;
    rq.set_list_services("");
    ASSERT_TRUE(rw->Write(rq));
    rw->WritesDone();
    grpc::reflection::v1alpha::ServerReflectionResponse rs;
    ASSERT_TRUE(rw->Read(&rs));
    std::set<std::string> names;
    for (const auto& sv : rs.list_services_response().service()) names.insert(sv.name());
    EXPECT_TRUE(names.count("strata.v1.Inference")) << rs.DebugString();
    EXPECT_TRUE(names.count("grpc.health.v1.Health"));
    (void)rw->Finish();
  }
  // Score: the continuation's logprobs equal log-softmax of the
  // single-process logits; the greedy continuation scores higher than a
  // different one.
  {
    const auto prompt = Prompt(6, 9);
    const auto greedy = Alone(prompt, 3);
    v1::ScoreRequest sr;
    for (int32_t t : prompt) sr.add_prompt_ids(t);
    for (int32_t t : greedy) sr.add_continuation_ids(t);
    grpc::ClientContext ctx;
    v1::ScoreResponse resp;
    ASSERT_TRUE(c.stub()->Score(&ctx, sr, &resp).ok());
    ASSERT_EQ(resp.logprobs_size(), 3);
    for (float lp : resp.logprobs()) EXPECT_LE(lp, 0.0f);
    auto ckpt = model::Checkpoint::Open(model::PosixFileSystem(), model_);
    kernels::cpu::CpuBackend backend({1, kernels::cpu::BestIsa(), model::DType::kF32});
    auto engine = worker::LocalEngine::Create(&backend, **ckpt, {});
    worker::GenerateRequest gr;
    gr.prompt = prompt;
    gr.max_tokens = 3;
    gr.ignore_eos = true;
    gr.return_logits = true;
    auto g = (*engine)->Generate(gr);
    ASSERT_TRUE(g.ok());
    double total = 0;
    for (int i = 0; i < 3; ++i) {
      const std::vector<float>& row = g->logits[i];
      const float mx = *std::max_element(row.begin(), row.end());
      double sum = 0;
      for (float v : row) sum += std::exp(static_cast<double>(v - mx));
      const double want = row[greedy[i]] - mx - std::log(sum);
      EXPECT_NEAR(resp.logprobs(i), want, 1e-4) << i;
      total += resp.logprobs(i);
    }
    EXPECT_NEAR(resp.total_logprob(), total, 1e-5);
    v1::ScoreRequest other = sr;
    other.set_continuation_ids(0, (greedy[0] + 1) % 512);
    grpc::ClientContext ctx2;
    v1::ScoreResponse resp2;
    ASSERT_TRUE(c.stub()->Score(&ctx2, other, &resp2).ok());
    EXPECT_GT(resp.logprobs(0), resp2.logprobs(0));
  }

  // Bad input: INVALID_ARGUMENT naming the field; the server stays healthy.
  struct Bad {
    std::function<void(v1::GenerateRequest*)> edit;
    std::string field;
  };
  const std::vector<Bad> bad = {
      {[](v1::GenerateRequest* r) { r->clear_prompt_ids(); }, "prompt_ids"},
      {[](v1::GenerateRequest* r) { r->set_prompt_ids(0, 512); }, "prompt_ids[0]"},
      {[](v1::GenerateRequest* r) { r->set_prompt_ids(0, -1); }, "prompt_ids[0]"},
      {[](v1::GenerateRequest* r) { r->mutable_stop()->set_max_tokens(0); }, "stop.max_tokens"},
      {[](v1::GenerateRequest* r) { r->mutable_stop()->set_max_tokens(1 << 30); }, "stop.max_tokens"},
      {[](v1::GenerateRequest* r) { r->mutable_sampling()->set_temperature(std::nanf("")); }, "sampling.temperature"},
      {[](v1::GenerateRequest* r) { r->mutable_sampling()->set_temperature(-1); }, "sampling.temperature"},
      {[](v1::GenerateRequest* r) { r->mutable_sampling()->set_temperature(2.5f); }, "sampling.temperature"},
      {[](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_p(1.5f); }, "sampling.top_p"},
      {[](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_k(-3); }, "sampling.top_k"},
      {[](v1::GenerateRequest* r) { r->set_logprobs(21); }, "logprobs"},
      {[](v1::GenerateRequest* r) {
         for (int i = 0; i < 100; ++i) r->mutable_stop()->add_stop_token_ids(1);
       },
       "stop.stop_token_ids"},
      {[](v1::GenerateRequest* r) { r->mutable_stop()->add_stop_token_ids(9999); }, "stop.stop_token_ids[0]"},
      {[](v1::GenerateRequest* r) { r->set_model("gpt-17"); }, "model"},
  };
  for (const Bad& b : bad) {
    v1::GenerateRequest r = Request({1, 2, 3}, 4);
    b.edit(&r);
    Outcome o = Call(c.stub(), r);
    EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << b.field;
    EXPECT_EQ(o.status.error_message().rfind(b.field, 0), 0u) << o.status.error_message();
  }
  EXPECT_TRUE(c.Healthy());

  // Cancel mid-stream: the blocks come back at once.
  {
    grpc::ClientContext ctx;
    auto reader = c.stub()->Generate(&ctx, Request(Prompt(20, 3), 3000));
    v1::GenerateResponse m;
    int got = 0;
    while (got < 5 && reader->Read(&m)) got += m.tokens_size();
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    const auto until = Clock::now() + std::chrono::seconds(2);
    while (c.MetricValue("strata_kv_cache_usage_ratio") != 0.0 && Clock::now() < until) {
      std::this_thread::sleep_for(milliseconds(20));
    }
    EXPECT_EQ(c.MetricValue("strata_kv_cache_usage_ratio"), 0.0);
  }
  // A deadline ends the request with DEADLINE_EXCEEDED.
  {
    Outcome o = Call(c.stub(), Request(Prompt(10, 4), 3000), /*timeout_ms=*/300);
    EXPECT_EQ(o.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  EXPECT_TRUE(c.Healthy());
  c.Stop();
}

TEST_F(RouterTest, SmallKvPoolPreemptsAndFullQueueRejects) {
  Cluster c;
  // 8 blocks of 4 tokens: room for one or two of these sequences at a time,
  // and one stage, so no step is in flight while the next is planned and
  // any running sequence can be preempted.
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "1", "--tp", "1", "--kv-blocks", "8", "--block-size", "4",
                                           "--max-tokens-per-step", "8", "--max-queue", "12"}));
  std::vector<v1::GenerateRequest> reqs;
  for (int i = 0; i < 12; ++i) reqs.push_back(Request(Prompt(2 + i % 3, i), 18 + i % 6));
  std::vector<std::future<Outcome>> futures;
  for (int i = 0; i < 12; ++i) futures.push_back(std::async(std::launch::async, [&, i] { return Call(c.stub(), reqs[i]); }));
  for (int i = 0; i < 12; ++i) {
    Outcome o = futures[i].get();
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(o.tokens, Alone(std::vector<int32_t>(reqs[i].prompt_ids().begin(), reqs[i].prompt_ids().end()),
                              reqs[i].stop().max_tokens()))
        << "request " << i;
  }
  EXPECT_GT(c.MetricValue("strata_preemptions_total"), 0.0) << c.Metrics();
  // A request that could never fit the pool is refused up front.
  Outcome huge = Call(c.stub(), Request(Prompt(30, 1), 10));
  EXPECT_EQ(huge.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Flood: more requests than the queue holds get RESOURCE_EXHAUSTED. All 60
  // are sent before any is read, so they reach the router within
  // milliseconds, far faster than two sequences at a time can drain a queue
  // of 12 (a thread a call let the router keep up when TLS slowed the
  // callers, and nothing was refused).
  constexpr int kFlood = 60;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  for (int i = 0; i < kFlood; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    readers.push_back(c.stub()->Generate(contexts.back().get(), Request(Prompt(6, i), 8)));
  }
  int exhausted = 0, ok = 0;
  for (auto& reader : readers) {
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
    }
    const grpc::Status status = reader->Finish();
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++exhausted;
    if (status.ok()) ++ok;
  }
  EXPECT_GT(exhausted, 0);
  EXPECT_GT(ok, 0);
  EXPECT_EQ(exhausted + ok, kFlood);
  EXPECT_TRUE(c.Healthy());
  c.Stop();
}

TEST_F(RouterTest, AKilledWorkerFailsItsRequestsAndThePipelineComesBack) {
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "2", "--tp", "1", "--heartbeat-ms", "200",
                                           "--down-after-ms", "2000", "--transport", "tcp"}));
  auto stream = std::async(std::launch::async, [&] { return Call(c.stub(), Request(Prompt(8, 2), 100000 / 100)); });
  std::this_thread::sleep_for(milliseconds(300));
  const nlohmann::json victim = c.info()["workers"][1];  // stage 1
  const auto killed = Clock::now();
  kill(victim["pid"].get<int>(), SIGKILL);
  Outcome o = stream.get();
  const double secs = std::chrono::duration<double>(Clock::now() - killed).count();
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAVAILABLE) << o.status.error_message();
  EXPECT_LT(secs, 5.0);
  // The health service follows within its 100 ms refresh.
  auto deadline = Clock::now() + std::chrono::seconds(2);
  while (c.Healthy() && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(20));
  EXPECT_FALSE(c.Healthy());
  Outcome refused = Call(c.stub(), Request({1, 2}, 2));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // Restart the worker as strata up started it; the pipeline comes back.
  std::vector<std::string> argv = victim["argv"].get<std::vector<std::string>>();
  base::Process restarted = SpawnLogged(argv, victim["log"].get<std::string>() + ".restart",
                                        {{"UCX_TLS", c.info()["ucx_tls"].get<std::string>()}});
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (!c.Healthy() && Clock::now() < until) std::this_thread::sleep_for(milliseconds(100));
  EXPECT_TRUE(c.Healthy());
  Outcome after = Call(c.stub(), Request(Prompt(5, 1), 6));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens, Alone(Prompt(5, 1), 6));
  c.Stop();
  restarted.Stop(std::chrono::seconds(30));
}

// The same over shared memory, where a connection to a dead process can
// look alive for good: the Abort that takes the pipeline down makes every
// worker drop its data-plane connections, so stage 0 reaches the restarted
// stage 1.
TEST_F(RouterTest, AKilledWorkerComesBackOverSharedMemory) {
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "2", "--tp", "1", "--heartbeat-ms", "200"}));
  const nlohmann::json victim = c.info()["workers"][1];  // stage 1
  kill(victim["pid"].get<int>(), SIGKILL);
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (c.Healthy() && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(20));
  EXPECT_FALSE(c.Healthy());
  // Long enough dead that the router's channel to it is deep in gRPC's
  // reconnect backoff (1 s growing to 120 s by default), where every call
  // fails at once: the heartbeats must still see the restarted worker.
  std::this_thread::sleep_for(std::chrono::seconds(6));
  base::Process restarted = SpawnLogged(victim["argv"].get<std::vector<std::string>>(),
                                        victim["log"].get<std::string>() + ".restart",
                                        {{"UCX_TLS", c.info()["ucx_tls"].get<std::string>()}});
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (!c.Healthy() && Clock::now() < until) std::this_thread::sleep_for(milliseconds(100));
  ASSERT_TRUE(c.Healthy()) << "the pipeline did not come back over shared memory";
  std::this_thread::sleep_for(milliseconds(600));  // three heartbeats: it stays up
  Outcome after = Call(c.stub(), Request(Prompt(5, 1), 6));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens, Alone(Prompt(5, 1), 6));
  c.Stop();
  restarted.Stop(std::chrono::seconds(30));
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// A worker that stops answering (SIGSTOP: alive, silent) is noticed by the
// heartbeats within --down-after-ms; its requests end with UNAVAILABLE, and
// when it answers again (SIGCONT, same process) the pipeline comes back.
// Over TCP, and over shared memory (no UCX peer-failure detection there):
// the stage-0 worker is the one that hangs, so the router's own sends to it
// stall, and must not stall the router.
class HungWorkerTest : public RouterTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(HungWorkerTest, IsNoticedByHeartbeatsAndRecovers) {
  Cluster c;
  const bool tcp = std::string(GetParam()) == "tcp";
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "2", "--tp", "1", "--heartbeat-ms", "200",
                                           "--down-after-ms", "1500", "--transport", GetParam()}));
  auto stream = std::async(std::launch::async, [&] { return Call(c.stub(), Request(Prompt(8, 2), 1000)); });
  std::this_thread::sleep_for(milliseconds(300));
  const int victim = c.info()["workers"][tcp ? 1 : 0]["pid"].get<int>();
  const auto stopped = Clock::now();
  kill(victim, SIGSTOP);
  Outcome o = stream.get();
  const double secs = std::chrono::duration<double>(Clock::now() - stopped).count();
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAVAILABLE) << o.status.error_message();
  EXPECT_GT(o.tokens.size(), 0u) << "the tokens before the hang were streamed";
  EXPECT_LT(secs, 5.0);
  kill(victim, SIGCONT);
  const auto until = Clock::now() + std::chrono::seconds(30);
  Outcome after;
  do {
    std::this_thread::sleep_for(milliseconds(200));
    after = Call(c.stub(), Request(Prompt(5, 1), 6));
  } while (!after.status.ok() && Clock::now() < until);
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens, Alone(Prompt(5, 1), 6));
  c.Stop();
}

INSTANTIATE_TEST_SUITE_P(Transports, HungWorkerTest, ::testing::Values("tcp", "shm"),
                         [](const auto& info) { return std::string(info.param); });

// Two replicas: requests spread over both; when one replica loses a worker
// the router keeps serving on the other.
TEST_F(RouterTest, ReplicasShareTheLoadAndSurviveEachOther) {
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "1", "--tp", "1", "--replicas", "2", "--transport", "tcp",
                                           "--heartbeat-ms", "200", "--down-after-ms", "1500"}));
  {
    grpc::ClientContext ctx;
    v1::ListModelsResponse lm;
    ASSERT_TRUE(c.stub()->ListModels(&ctx, v1::ListModelsRequest(), &lm).ok());
    EXPECT_EQ(lm.models(0).pipelines_up(), 2);
  }
  std::vector<std::future<Outcome>> futures;
  for (int i = 0; i < 16; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] { return Call(c.stub(), Request(Prompt(4 + i, i), 16)); }));
  }
  for (int i = 0; i < 16; ++i) {
    Outcome o = futures[i].get();
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(o.tokens, Alone(Prompt(4 + i, i), 16));
  }
  // Both replicas ran steps.
  const std::string m = c.Metrics();
  for (const char* p : {"p0", "p1"}) {
    const std::string key = absl::StrCat("strata_pipeline_steps_total{model=\"router_model\",pipeline=\"", p, "\"} ");
    const size_t at = m.find(key);
    ASSERT_NE(at, std::string::npos) << m;
    EXPECT_GT(std::atof(m.c_str() + at + key.size()), 0.0) << p;
  }
  kill(c.info()["workers"][1]["pid"].get<int>(), SIGKILL);
  std::this_thread::sleep_for(milliseconds(2500));  // replica p1 marked down
  EXPECT_TRUE(c.Healthy());
  for (int i = 0; i < 4; ++i) {
    Outcome o = Call(c.stub(), Request(Prompt(6, i), 5));
    EXPECT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(o.tokens, Alone(Prompt(6, i), 5));
  }
  grpc::ClientContext ctx;
  v1::ListModelsResponse lm;
  ASSERT_TRUE(c.stub()->ListModels(&ctx, v1::ListModelsRequest(), &lm).ok());
  EXPECT_EQ(lm.models(0).pipelines_up(), 1);
  c.Stop();
}

// Prefix caching on a 2-stage pipeline: requests sharing a system prompt
// take its blocks from the cache (the hits are counted) and give exactly
// the single-process engine's tokens, alone and concurrently; Score
// requests sharing a context give bitwise the logprobs of a cluster with
// --prefix-caching=false, which caches nothing; after everything ends no
// KV block is in use, and a request that needs the whole pool evicts the
// cache on demand.
TEST_F(RouterTest, SharedPrefixesComeFromTheCacheWithTheSameTokens) {
  const std::vector<int32_t> system = Prompt(40, 77);  // 10 blocks of 4
  auto with = [&](int tail) {
    std::vector<int32_t> p = system;
    for (int i = 0; i < 3; ++i) p.push_back((tail * 13 + i * 5 + 1) % 512);
    return p;
  };
  std::vector<std::vector<float>> scores[2];
  for (bool caching : {true, false}) {
    SCOPED_TRACE(caching ? "prefix caching" : "no prefix caching");
    Cluster c;
    // 30 blocks of 4 tokens: the cache cannot keep everything.
    ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "2", "--tp", "1", "--kv-blocks", "30", "--block-size", "4",
                                             "--max-tokens-per-step", "16", "--prefix-caching",
                                             caching ? "true" : "false"}));
    const std::string labels = "{model=\"router_model\",pipeline=\"p0\"}";
    for (int i = 0; i < 3; ++i) {
      Outcome o = Call(c.stub(), Request(with(i), 6));
      ASSERT_TRUE(o.status.ok()) << o.status.error_message();
      EXPECT_EQ(o.tokens, Alone(with(i), 6)) << "request " << i;
    }
    // The second and third reused the system prompt's 10 blocks.
    EXPECT_EQ(c.MetricValue("strata_prefix_cache_hits_tokens_total"), caching ? 2 * 40 : 0) << c.Metrics();
    EXPECT_EQ(c.MetricValue("strata_prefix_cache_queries_tokens_total"), caching ? 3 * 43 : 0);
    std::vector<std::future<Outcome>> futures;
    for (int i = 3; i < 9; ++i) {
      futures.push_back(std::async(std::launch::async, [&, i] { return Call(c.stub(), Request(with(i), 4)); }));
    }
    for (int i = 3; i < 9; ++i) {
      Outcome o = futures[i - 3].get();
      ASSERT_TRUE(o.status.ok()) << o.status.error_message();
      EXPECT_EQ(o.tokens, Alone(with(i), 4)) << "request " << i;
    }
    for (int i = 0; i < 3; ++i) {
      v1::ScoreRequest sr;
      for (int32_t t : system) sr.add_prompt_ids(t);
      for (int k = 0; k <= i; ++k) sr.add_continuation_ids((i * 31 + k * 7) % 512);
      grpc::ClientContext ctx;
      v1::ScoreResponse resp;
      ASSERT_TRUE(c.stub()->Score(&ctx, sr, &resp).ok());
      scores[caching ? 0 : 1].emplace_back(resp.logprobs().begin(), resp.logprobs().end());
    }
    std::this_thread::sleep_for(milliseconds(100));
    EXPECT_EQ(c.MetricValue("strata_kv_cache_usage_ratio"), 0.0);
    EXPECT_EQ(c.MetricValue("strata_pipeline_kv_used_blocks"), 0.0);
    if (caching) {
      EXPECT_GT(c.MetricValue("strata_prefix_cache_hits_tokens_total"), 2 * 40 + 6 * 36) << c.Metrics();
      EXPECT_GE(c.MetricValue("strata_prefix_cache_blocks"), 10.0);
    } else {
      EXPECT_EQ(c.MetricValue("strata_prefix_cache_blocks"), 0.0);
    }
    // 100 tokens of 120: the cached blocks make room.
    const std::vector<int32_t> big = Prompt(90, 5);
    Outcome o = Call(c.stub(), Request(big, 10));
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(o.tokens, Alone(big, 10));
    std::this_thread::sleep_for(milliseconds(100));
    EXPECT_EQ(c.MetricValue("strata_pipeline_kv_used_blocks"), 0.0);
    if (caching) EXPECT_GT(c.MetricValue("strata_prefix_cache_evictions_total"), 0.0) << c.Metrics();
    c.Stop();
  }
  EXPECT_EQ(scores[0], scores[1]) << "Score with the cache differs from Score without";
}

// The public port serves the API, health and reflection, never the Fleet
// service: a caller cannot register a fake pipeline there.
TEST_F(RouterTest, ThePublicPortServesNoFleet) {
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "1", "--tp", "1"}));
  auto fleet = v1::Fleet::NewStub(c.channel());
  grpc::ClientContext ctx;
  v1::RegisterRequest forged;
  forged.mutable_identity()->set_pipeline("evil");
  v1::RegisterResponse resp;
  EXPECT_EQ(fleet->Register(&ctx, forged, &resp).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_TRUE(c.Healthy());
  c.Stop();
}

// SIGKILL of the router: the workers keep running; a router restarted with
// the same flags gets its fleet back (the workers register again when its
// heartbeats stop) and serves the same tokens.
TEST_F(RouterTest, ARestartedRouterGetsItsFleetBack) {
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "2", "--tp", "1"}));
  const std::vector<int32_t> prompt = Prompt(6, 3);
  Outcome before = Call(c.stub(), Request(prompt, 8));
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();
  kill(c.info()["router_pid"].get<int>(), SIGKILL);
  std::this_thread::sleep_for(milliseconds(500));
  base::Process router = SpawnLogged(c.info()["router_argv"].get<std::vector<std::string>>(),
                                     c.info()["router_log"].get<std::string>() + ".restart");
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (!c.Healthy() && Clock::now() < until) std::this_thread::sleep_for(milliseconds(100));
  ASSERT_TRUE(c.Healthy()) << "the restarted router did not get its fleet back";
  Outcome after = Call(c.stub(), Request(prompt, 8));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens, before.tokens);
  EXPECT_EQ(after.tokens, Alone(prompt, 8));
  router.Signal(SIGTERM);
  EXPECT_TRUE(router.Wait(std::chrono::seconds(30)).ok());
  c.Stop();
}

// A replica that dies with requests in flight: they continue on the other
// replica (prompt plus the tokens already streamed), and each client sees
// one stream with exactly the tokens of an undisturbed run.
TEST_F(RouterTest, RequestsInFlightOnADyingReplicaContinueOnAnother) {
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "1", "--tp", "1", "--replicas", "2", "--transport", "tcp",
                                           "--heartbeat-ms", "200", "--down-after-ms", "1500"}));
  std::vector<std::future<Outcome>> futures;
  for (int i = 0; i < 8; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] { return Call(c.stub(), Request(Prompt(5, i), 1500)); }));
  }
  std::this_thread::sleep_for(milliseconds(150));  // every request is streaming by now
  kill(c.info()["workers"][1]["pid"].get<int>(), SIGKILL);
  for (int i = 0; i < 8; ++i) {
    Outcome o = futures[i].get();
    ASSERT_TRUE(o.status.ok()) << i << ": " << o.status.error_message();
    EXPECT_EQ(o.tokens, Alone(Prompt(5, i), 1500)) << i;
  }
  // Summed over the reasons (dead_stage here; hung_stage or step_timeout on a slow machine).
  const std::string m = c.Metrics();
  const std::string key = "\nstrata_requests_migrated_total{model=\"router_model\",";
  double migrated = 0;
  for (size_t at = m.find(key); at != std::string::npos; at = m.find(key, at + 1)) {
    migrated += std::atof(m.c_str() + m.find("} ", at) + 2);
  }
  EXPECT_GT(migrated, 0.0) << "no request was in flight on the dead replica";
  c.Stop();
}

// Registrations whose data address never answers (a socket that listens
// and never accepts: UCX's address fetch waits out its 5 s connect
// timeout), 30 of them, while the replica that is up serves: health
// answers within 100 ms throughout and every request is served within a
// second. Each such registration used to stop the router for 5 s (the
// dispatcher's loop made the connect), health saying SERVING meanwhile.
TEST_F(RouterTest, RegistrationsWhoseDataAddressNeverAnswersStallNothing) {
  if (std::getenv("STRATA_SECURE_CLUSTER") != nullptr) GTEST_SKIP() << "registers without the fleet's certificates";
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "1", "--tp", "1", "--transport", "tcp"}));
  v1::ListModelsResponse models;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(c.stub()->ListModels(&ctx, v1::ListModelsRequest(), &models).ok());
    ASSERT_EQ(models.models_size(), 1);
  }
  const v1::ModelInfo& info = models.models(0).info();
  const int hole = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ASSERT_EQ(bind(hole, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(hole, 0), 0);
  ASSERT_EQ(getsockname(hole, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string black_hole = absl::StrCat("127.0.0.1:", ntohs(a.sin_port));
  auto fleet = v1::Fleet::NewStub(
      grpc::CreateChannel(c.info()["fleet_address"].get<std::string>(), grpc::InsecureChannelCredentials()));
  std::atomic<int> registered{0};
  std::thread churn([&] {
    for (int i = 0; i < 30; ++i) {
      v1::RegisterRequest r;
      auto* id = r.mutable_identity();
      id->set_pipeline(absl::StrCat("hole", i));
      id->set_num_stages(1);
      id->set_tp_size(1);
      id->set_first_layer(0);
      id->set_last_layer(info.shape().num_layers());
      id->set_has_embedding(true);
      id->set_has_lm_head(true);
      r.set_model_name(info.name());
      *r.mutable_shape() = info.shape();
      r.set_control_address(absl::StrCat("127.0.0.1:", base::PickFreePort()));
      r.set_data_address(black_hole);
      r.set_kv_num_blocks(64);
      r.set_kv_block_size(16);
      r.set_epoch(1);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      v1::RegisterResponse resp;
      if (fleet->Register(&ctx, r, &resp).ok()) registered++;
      std::this_thread::sleep_for(milliseconds(100));
    }
  });
  auto health = grpc::health::v1::Health::NewStub(c.channel());
  double slowest_health = 0, slowest_request = 0;
  int checks = 0, requests = 0;
  const auto until = Clock::now() + std::chrono::seconds(8);
  auto next_request = Clock::now();
  while (Clock::now() < until) {
    const auto start = Clock::now();
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckResponse resp;
    const grpc::Status s = health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp);
    slowest_health = std::max(slowest_health, std::chrono::duration<double>(Clock::now() - start).count());
    EXPECT_TRUE(s.ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) << s.error_message();
    checks++;
    if (Clock::now() >= next_request) {
      const auto t0 = Clock::now();
      Outcome o = Call(c.stub(), Request(Prompt(5, requests), 8), 10000);
      slowest_request = std::max(slowest_request, std::chrono::duration<double>(Clock::now() - t0).count());
      EXPECT_TRUE(o.status.ok()) << o.status.error_message();
      EXPECT_EQ(o.tokens.size(), 8u);
      requests++;
      next_request = Clock::now() + milliseconds(400);
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  churn.join();
  close(hole);
  EXPECT_EQ(registered.load(), 30);
  std::fprintf(stderr, "%d health checks, slowest %.1f ms; %d requests, slowest %.0f ms\n", checks,
               slowest_health * 1000, requests, slowest_request * 1000);
  EXPECT_LT(slowest_health, 0.1);
  EXPECT_LT(slowest_request, 1.0) << "a request waited behind the connects";
  EXPECT_TRUE(c.Healthy());
  c.Stop();
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// SIGTERM drains the router: the running request finishes, a new one gets
// UNAVAILABLE, health says NOT_SERVING, and the router exits.
TEST_F(RouterTest, SigtermDrainsTheRouter) {
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "1", "--tp", "1"}));
  auto running = std::async(std::launch::async, [&] { return Call(c.stub(), Request(Prompt(8, 3), 3000)); });
  std::this_thread::sleep_for(milliseconds(100));
  const int router = c.info()["router_pid"].get<int>();
  kill(router, SIGTERM);
  // Once health says the router drains (not a fixed wait: on a loaded CI
  // machine with TLS, 50 ms was not always enough for the signal to land).
  const auto draining_by = Clock::now() + std::chrono::seconds(10);
  while (c.Healthy() && Clock::now() < draining_by) std::this_thread::sleep_for(milliseconds(20));
  Outcome refused = Call(c.stub(), Request({1, 2}, 2));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.status.error_message();
  Outcome o = running.get();
  EXPECT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_EQ(o.tokens.size(), 3000u);
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (kill(router, 0) == 0 && Clock::now() < until) std::this_thread::sleep_for(milliseconds(50));
  EXPECT_NE(kill(router, 0), 0) << "the router is still running after draining";
  c.Stop();
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

std::string TokenizerDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return std::string(srcdir ? srcdir : ".") + "/strata/third_party/llama3_tokenizer/data";
}

// Text in and out (a tiny model with Llama 3's vocabulary and tokenizer):
// text prompts and chat messages become the tokenizer's ids, text deltas
// concatenate to the detokenized reply, stop strings end the reply before
// them, and Tokenize / Detokenize round-trip.
TEST_F(RouterTest, TextPromptsChatStopStringsAndTokenize) {
  const std::string dir = absl::StrCat(TempDir(), "/text_model");
  model::MakeModelOptions mo;
  mo.config = *model::LlamaPreset("tiny");
  mo.config.vocab_size = 128256;
  mo.dtype = model::DType::kF32;
  ASSERT_TRUE(model::WriteRandomModel(model::PosixFileSystem(), dir, mo).ok());
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const std::string bytes = Slurp(TokenizerDir() + "/" + name);
    ASSERT_FALSE(bytes.empty()) << "run tools/tokenizer/make_data.sh";
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
  }
  auto tok = model::Tokenizer::Load(model::PosixFileSystem(), dir);
  ASSERT_TRUE(tok.ok());
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(dir, {"--stages", "2", "--tp", "1"}));
  auto ckpt = model::Checkpoint::Open(model::PosixFileSystem(), dir);
  kernels::cpu::CpuBackend backend({1, kernels::cpu::BestIsa(), model::DType::kF32});
  auto engine = worker::LocalEngine::Create(&backend, **ckpt, {});
  auto alone = [&](const std::vector<int32_t>& prompt, int n) {
    worker::GenerateRequest r;
    r.prompt = prompt;
    r.max_tokens = n;
    r.ignore_eos = true;
    return (*engine)->Generate(r)->tokens;
  };
  auto call = [&](const v1::GenerateRequest& req, std::string* text) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = c.stub()->Generate(&ctx, req);
    Outcome out;
    v1::GenerateResponse m;
    text->clear();
    while (reader->Read(&m)) {
      for (const auto& t : m.tokens()) out.tokens.push_back(t.token_id());
      *text += m.text();
      if (m.finish_reason() != v1::GenerateResponse::FINISH_REASON_UNSPECIFIED) out.finish = m.finish_reason();
    }
    out.status = reader->Finish();
    return out;
  };
  // A text prompt: <|begin_of_text|> + its ids.
  v1::GenerateRequest req;
  req.set_prompt("The capital of France is");
  req.mutable_stop()->set_max_tokens(10);
  req.mutable_stop()->set_ignore_eos(true);
  std::string text;
  Outcome o = call(req, &text);
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  std::vector<int32_t> prompt = {model::kBeginOfText};
  auto ids = (*tok)->Encode("The capital of France is");
  prompt.insert(prompt.end(), ids->begin(), ids->end());
  EXPECT_EQ(o.tokens, alone(prompt, 10));
  model::IncrementalDecoder dec(tok->get());
  std::string want_text;
  for (int32_t id : o.tokens) want_text += *dec.Push(id);
  want_text += dec.Flush();
  EXPECT_EQ(text, want_text);
  // A stop string taken from that reply ends the next one just before it.
  bool checked_stop = false;
  if (o.tokens.size() >= 6) {
    const std::string stop = *(*tok)->Decode({o.tokens[4], o.tokens[5]});
    const size_t at = want_text.find(stop);
    if (!stop.empty() && model::ValidUtf8Prefix(stop) == stop.size() && at != std::string::npos) {
      v1::GenerateRequest s = req;
      s.mutable_stop()->add_stop_strings(stop);
      std::string stopped_text;
      Outcome so = call(s, &stopped_text);
      ASSERT_TRUE(so.status.ok()) << so.status.error_message();
      EXPECT_EQ(so.finish, v1::GenerateResponse::STOP);
      EXPECT_EQ(stopped_text, want_text.substr(0, at));
      EXPECT_LE(so.tokens.size(), 6u);
      checked_stop = true;
    }
  }
  EXPECT_TRUE(checked_stop) << "the reply's tokens 4 and 5 made no usable stop string: pick others";
  // Chat messages: the Llama 3.1 format.
  v1::GenerateRequest chat;
  auto* m = chat.add_messages();
  m->set_role("user");
  m->set_content("Hello!");
  chat.mutable_stop()->set_max_tokens(6);
  chat.mutable_stop()->set_ignore_eos(true);
  o = call(chat, &text);
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_EQ(o.tokens, alone(*model::ApplyChatTemplate(**tok, {{"user", "Hello!"}}), 6));
  // Malformed UTF-8 in text fields: INVALID_ARGUMENT naming the field.
  {
    v1::GenerateRequest bad_utf8 = req;
    bad_utf8.set_prompt(std::string("caf\xc3(", 5));
    Outcome bo = call(bad_utf8, &text);
    EXPECT_EQ(bo.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(bo.status.error_message().rfind("prompt", 0), 0u) << bo.status.error_message();
    v1::GenerateRequest bad_stop = req;
    bad_stop.mutable_stop()->add_stop_strings("\xff");
    bo = call(bad_stop, &text);
    EXPECT_EQ(bo.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(bo.status.error_message().rfind("stop.stop_strings[0]", 0), 0u) << bo.status.error_message();
    v1::GenerateRequest bad_chat = req;
    bad_chat.clear_prompt();
    auto* bm = bad_chat.add_messages();
    bm->set_role("user");
    bm->set_content("\xc0\xaf");
    bo = call(bad_chat, &text);
    EXPECT_EQ(bo.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(bo.status.error_message().find("messages[0].content"), std::string::npos) << bo.status.error_message();
    grpc::ClientContext tctx;
    v1::TokenizeRequest bt;
    bt.set_text("\xfe");
    v1::TokenizeResponse btr;
    grpc::Status ts = c.stub()->Tokenize(&tctx, bt, &btr);
    EXPECT_EQ(ts.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(ts.error_message().rfind("text", 0), 0u) << ts.error_message();
    EXPECT_TRUE(c.Healthy());
  }
  v1::GenerateRequest both = req;
  both.add_prompt_ids(1);
  EXPECT_EQ(call(both, &text).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest role = chat;
  role.mutable_messages(0)->set_role("robot");
  Outcome bad_role = call(role, &text);
  EXPECT_EQ(bad_role.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad_role.status.error_message().find("messages[0].role"), std::string::npos);
  // Tokenize and Detokenize.
  grpc::ClientContext ctx1;
  v1::TokenizeRequest tr;
  tr.set_text("Hello world<|eot_id|>");
  v1::TokenizeResponse tresp;
  ASSERT_TRUE(c.stub()->Tokenize(&ctx1, tr, &tresp).ok());
  EXPECT_EQ(std::vector<int32_t>(tresp.ids().begin(), tresp.ids().end()), *(*tok)->Encode("Hello world<|eot_id|>"));
  grpc::ClientContext ctx2;
  tr.set_special_tokens(true);
  ASSERT_TRUE(c.stub()->Tokenize(&ctx2, tr, &tresp).ok());
  EXPECT_EQ(tresp.ids(tresp.ids_size() - 1), model::kEndOfTurn);
  grpc::ClientContext ctx3;
  v1::DetokenizeRequest dr;
  for (int32_t id : tresp.ids()) dr.add_ids(id);
  v1::DetokenizeResponse dresp;
  ASSERT_TRUE(c.stub()->Detokenize(&ctx3, dr, &dresp).ok());
  EXPECT_EQ(dresp.text(), "Hello world<|eot_id|>");
  grpc::ClientContext ctx4;
  dr.add_ids(1 << 20);
  EXPECT_EQ(c.stub()->Detokenize(&ctx4, dr, &dresp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  c.Stop();
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// One rank of a tensor-parallel stage: killed and restarted with its exact
// flags, it rejoins (the ranks re-form their group at the router's next
// pipeline epoch, under the epoch's own name in the rendezvous store), over
// TCP and shared memory, rank 1 and rank 0 (which also serves the store).
// Before pipeline epochs the restarted rank waited for good on the old
// rendezvous keys and its peer kept the dead group.
class TpRankRestartTest : public RouterTest, public ::testing::WithParamInterface<std::tuple<const char*, int>> {};

nlohmann::json Worker(const nlohmann::json& info, int stage, int rank) {
  for (const auto& w : info["workers"]) {
    if (w["stage"].get<int>() == stage && w["tp_rank"].get<int>() == rank) return w;
  }
  ADD_FAILURE() << "no worker of stage " << stage << " rank " << rank << " in " << info.dump();
  return {};
}

bool WaitHealthy(Cluster& c, bool want, std::chrono::seconds within) {
  const auto until = Clock::now() + within;
  while (c.Healthy() != want && Clock::now() < until) std::this_thread::sleep_for(milliseconds(50));
  return c.Healthy() == want;
}

TEST_P(TpRankRestartTest, ARestartedRankRejoinsItsGroup) {
  const auto [transport, rank] = GetParam();
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "2", "--tp", "2", "--heartbeat-ms", "200",
                                           "--down-after-ms", "1500", "--transport", transport}));
  const std::vector<int32_t> want = Alone(Prompt(6, 3), 8);
  EXPECT_EQ(Call(c.stub(), Request(Prompt(6, 3), 8)).tokens, want);
  const nlohmann::json victim = Worker(c.info(), 1, rank);
  const int peer = Worker(c.info(), 1, 1 - rank)["pid"].get<int>();
  kill(victim["pid"].get<int>(), SIGKILL);
  ASSERT_TRUE(WaitHealthy(c, false, std::chrono::seconds(5))) << "the router did not notice the dead rank";
  base::Process restarted = SpawnLogged(victim["argv"].get<std::vector<std::string>>(),
                                        victim["log"].get<std::string>() + ".restart",
                                        {{"UCX_TLS", c.info()["ucx_tls"].get<std::string>()}});
  ASSERT_TRUE(WaitHealthy(c, true, std::chrono::seconds(30)))
      << "the pipeline did not come back with a restarted TP rank " << rank << ":\n"
      << Slurp(victim["log"].get<std::string>() + ".restart");
  Outcome after = Call(c.stub(), Request(Prompt(6, 3), 8));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens, want);
  EXPECT_EQ(kill(peer, 0), 0) << "the surviving rank died";
  c.Stop();
  restarted.Stop(std::chrono::seconds(30));
}

INSTANTIATE_TEST_SUITE_P(Layouts, TpRankRestartTest,
                         ::testing::Values(std::make_tuple("tcp", 1), std::make_tuple("shm", 0)),
                         [](const auto& info) {
                           return absl::StrCat(std::get<0>(info.param), "Rank", std::get<1>(info.param));
                         });

// A tensor-parallel rank stopped mid-stream for longer than the router's
// patience (SIGSTOP, then SIGCONT): its healthy peer keeps running (it
// crashed inside Gloo before: the ranks applied the Abort at different
// steps), the streams in flight end with UNAVAILABLE after the tokens they
// had, and the pipeline comes back with the same tokens.
TEST_F(RouterTest, AStoppedTpRankNeitherCrashesItsPeerNorSplitsTheGroup) {
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.Start(model_, {"--stages", "1", "--tp", "2", "--heartbeat-ms", "200",
                                           "--down-after-ms", "1500", "--transport", "tcp"}));
  const int victim = Worker(c.info(), 0, 1)["pid"].get<int>();
  const int peer = Worker(c.info(), 0, 0)["pid"].get<int>();
  std::vector<std::future<Outcome>> streams;
  for (int i = 0; i < 4; ++i) {
    streams.push_back(std::async(std::launch::async, [&, i] { return Call(c.stub(), Request(Prompt(5 + i, i), 2000)); }));
  }
  std::this_thread::sleep_for(milliseconds(500));
  kill(victim, SIGSTOP);
  for (auto& s : streams) {
    Outcome o = s.get();
    EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAVAILABLE) << o.status.error_message();
  }
  std::this_thread::sleep_for(milliseconds(3000));  // past --down-after-ms: the Abort is out
  // Queue a request that must wait, then wake the rank.
  auto waiting = std::async(std::launch::async, [&] {
    Outcome o;
    const auto until = Clock::now() + std::chrono::seconds(30);
    do {
      std::this_thread::sleep_for(milliseconds(200));
      o = Call(c.stub(), Request(Prompt(7, 9), 12));
    } while (!o.status.ok() && Clock::now() < until);
    return o;
  });
  kill(victim, SIGCONT);
  Outcome after = waiting.get();
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens, Alone(Prompt(7, 9), 12));
  EXPECT_EQ(kill(peer, 0), 0) << "the healthy rank died";
  EXPECT_EQ(kill(victim, 0), 0) << "the stopped rank died";
  c.Stop();
}

}  // namespace
}  // namespace strata
