// The worker's data loop over the loopback transport, on the tiny model and
// the reference backend: one stage answers a plan with a result carrying
// its timing; two stages forward activations and give the same tokens as
// one, with both stages' timings; a malformed plan, a next stage that
// refuses sends and an aborted step each end as the router expects: a
// typed result (code and message), or nothing.
#include "worker/data_loop.h"

#include <cstring>

#include "gtest/gtest.h"
#include "kernels/reference/reference_backend.h"
#include "model/checkpoint.h"
#include "model/make_model.h"
#include "transport/loopback_transport.h"
#include "worker/stage_executor.h"

namespace strata::worker {
namespace {

using std::chrono::milliseconds;
using transport::LoopbackNetwork;

// One worker: its executor, KV pool, runner, loop and endpoint.
struct Stage {
  std::unique_ptr<StageExecutor> executor;
  std::unique_ptr<kernels::KvCache> cache;
  std::unique_ptr<StepRunner> runner;
  std::unique_ptr<transport::LoopbackTransport> endpoint;
  std::unique_ptr<WorkerMetrics> metrics;
  AbortList aborts;
  std::unique_ptr<DataLoop> loop;
};

class DataLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model::MakeModelOptions o;
    o.config = *model::LlamaPreset("tiny");
    o.dtype = model::DType::kF32;
    o.seed = 3;
    ASSERT_TRUE(model::WriteRandomModel(&fs_, "m", o).ok());
    ckpt_ = std::move(*model::Checkpoint::Open(&fs_, "m"));
    router_ = net_.Listen();
  }
  void TearDown() override {
    for (auto& s : stages_) s->loop->Stop();
  }

  // Stage `stage` of `stages`, one rank, forwarding to `next` (empty: last).
  Stage* AddStage(int stage, int stages, const std::string& next) {
    auto s = std::make_unique<Stage>();
    const int64_t layers = ckpt_->config().num_layers;
    auto place = *model::StagePlace::Create(stage, stages, 0, 1, layers);
    StageSpec spec{place.first_layer(), place.last_layer(), place.has_embedding(), place.has_lm_head(), 0, 1};
    s->executor = std::move(*StageExecutor::Load(&backend_, *ckpt_, spec));
    s->cache = std::move(*backend_.AllocateKvCache(s->executor->KvShape(16, 16)));
    s->runner = std::make_unique<StepRunner>(s->executor.get(), s->cache.get());
    s->endpoint = net_.Listen();
    s->metrics = std::make_unique<WorkerMetrics>(WorkerLabels{"m", "p0", stage, 0});
    DataLoopOptions d;
    d.pipeline = "p0";
    d.next_stage = next;
    d.result_address = router_->address();
    d.step_timeout = milliseconds(200);
    d.log_prefix = "test worker";
    s->loop = std::make_unique<DataLoop>(place, d, s->endpoint.get(), s->runner.get(), &s->aborts, s->metrics.get(),
                                         nullptr);
    s->loop->Start();
    stages_.push_back(std::move(s));
    return stages_.back().get();
  }

  static transport::StepPlan Plan(uint64_t step, std::vector<int32_t> tokens) {
    transport::StepPlan p;
    p.step_id = step;
    p.sequences.resize(1);
    p.sequences[0].seq_id = 5;
    p.sequences[0].num_tokens = static_cast<int32_t>(tokens.size());
    p.sequences[0].block_table = {0};
    p.sequences[0].sample = true;
    p.sequences[0].logprobs = 2;
    p.token_ids = std::move(tokens);
    return p;
  }

  void Send(Stage* to, const transport::StepPlan& plan) {
    const std::string bytes = transport::EncodePlan(plan);
    transport::WireHeader h;
    h.type = static_cast<uint16_t>(transport::MessageType::kStepPlan);
    h.step_id = plan.step_id;
    h.plan_bytes = static_cast<uint32_t>(bytes.size());
    const int peer = *router_->Connect(*transport::ParseHostPort(to->endpoint->address(), "stage"));
    ASSERT_TRUE(router_->Send(peer, h, {{bytes.data(), bytes.size()}}, milliseconds(100)).ok());
  }

  absl::StatusOr<transport::StepResult> NextResult() {
    auto m = router_->Receive(milliseconds(5000));
    if (!m.ok()) return m.status();
    return transport::DecodeResult(m->payload(), m->header.payload_bytes);
  }

  model::InMemoryFileSystem fs_;
  std::unique_ptr<model::Checkpoint> ckpt_;
  kernels::ReferenceBackend backend_{1};
  LoopbackNetwork net_;
  std::unique_ptr<transport::LoopbackTransport> router_;
  std::vector<std::unique_ptr<Stage>> stages_;
};

TEST_F(DataLoopTest, OneStageAnswersWithItsTiming) {
  Stage* s = AddStage(0, 1, "");
  Send(s, Plan(1, {1, 2, 3}));
  auto r = NextResult();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok()) << r->error;
  ASSERT_EQ(r->sequences.size(), 1u);
  EXPECT_GE(r->sequences[0].token, 0);
  EXPECT_EQ(r->sequences[0].top.size(), 2u);
  ASSERT_EQ(r->timings.size(), 1u);
  EXPECT_EQ(r->timings[0].stage, 0);
  EXPECT_GT(r->timings[0].compute_seconds, 0.0f);
  EXPECT_NE(s->metrics->Render().find("strata_worker_step_phase_seconds_count{"), std::string::npos);
}

TEST_F(DataLoopTest, TwoStagesGiveTheTokensOfOneWithBothTimings) {
  Stage* whole = AddStage(0, 1, "");
  Send(whole, Plan(1, {4, 5, 6, 7}));
  auto alone = NextResult();
  ASSERT_TRUE(alone.ok() && alone->ok());
  Stage* last = AddStage(1, 2, "");
  Stage* first = AddStage(0, 2, last->endpoint->address());
  Send(first, Plan(2, {4, 5, 6, 7}));
  auto piped = NextResult();
  ASSERT_TRUE(piped.ok()) << piped.status();
  ASSERT_TRUE(piped->ok()) << piped->error;
  EXPECT_EQ(piped->sequences[0].token, alone->sequences[0].token);
  EXPECT_NEAR(piped->sequences[0].logprob, alone->sequences[0].logprob, 1e-4);
  ASSERT_EQ(piped->timings.size(), 2u);
  EXPECT_EQ(piped->timings[0].stage, 0);
  EXPECT_EQ(piped->timings[1].stage, 1);
  EXPECT_GT(piped->timings[0].compute_seconds, 0.0f);
  EXPECT_GE(piped->timings[1].queue_seconds, 0.0f);
}

TEST_F(DataLoopTest, AMalformedPlanIsATypedFailure) {
  Stage* s = AddStage(0, 1, "");
  transport::StepPlan p = Plan(3, {1, 2});
  p.token_ids = {1, 100000};  // outside the vocabulary
  Send(s, p);
  auto r = NextResult();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r->error.find("pipeline p0 stage 0"), std::string::npos) << r->error;
  EXPECT_EQ(s->metrics->failed_steps->Value(), 1);
  // Bytes that are not a message at all are counted and dropped.
  ASSERT_TRUE(net_.DeliverRaw(s->endpoint->address(), "not a header", "").ok());
  Send(s, Plan(4, {1, 2}));
  auto ok = NextResult();
  ASSERT_TRUE(ok.ok() && ok->ok());
  EXPECT_EQ(ok->step_id, 4u);
  EXPECT_EQ(s->metrics->messages_rejected->Value(), 1);
}

TEST_F(DataLoopTest, ANextStageThatRefusesIsUnavailable) {
  Stage* last = AddStage(1, 2, "");
  Stage* first = AddStage(0, 2, last->endpoint->address());
  net_.FailSendsTo(last->endpoint->address(), absl::UnavailableError("connection reset"));
  Send(first, Plan(5, {1, 2}));
  auto r = NextResult();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(r->error.find("forwarding activations: connection reset"), std::string::npos) << r->error;
}

TEST_F(DataLoopTest, AfterReconnectANewNextStageGetsTheSteps) {
  Stage* last = AddStage(1, 2, "");
  Stage* first = AddStage(0, 2, last->endpoint->address());
  Send(first, Plan(1, {1, 2}));
  ASSERT_TRUE(NextResult().ok());
  // The next stage's connection is dropped, as after an Abort; the next
  // step connects again and still arrives.
  first->loop->Reconnect();
  Send(first, Plan(2, {3}));
  auto r = NextResult();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok()) << r->error;
  EXPECT_EQ(r->step_id, 2u);
}

TEST_F(DataLoopTest, AbortedStepsAreDropped) {
  Stage* s = AddStage(0, 1, "");
  s->aborts.Add(6, std::vector<uint64_t>{});
  Send(s, Plan(6, {1}));
  Send(s, Plan(7, {1}));
  auto r = NextResult();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->step_id, 7u);
  EXPECT_EQ(s->metrics->steps_aborted->Value(), 1);
}

}  // namespace
}  // namespace strata::worker
