// The data loops of one stage's two tensor-parallel ranks (threads here,
// each with its own backend, KV pool and loopback endpoint, joined by Gloo
// over TCP through the rendezvous store), driven as the router drives them:
// the ranks form their group at the first step of a pipeline epoch; an
// Abort that reached one rank before the other does not split the group's
// collectives (before pipeline epochs it crashed the process inside Gloo);
// a rank that dies fails its peer's step with a typed result, not an abort,
// and a restarted rank (either one: rank 0 also serves the store) rejoins
// at the next epoch; a step of an older epoch is stale; a worker that
// registers takes no step before its answer nor one below its floor.
#include <cstring>

#include "base/net.h"
#include "gtest/gtest.h"
#include "kernels/reference/reference_backend.h"
#include "model/checkpoint.h"
#include "model/make_model.h"
#include "transport/loopback_transport.h"
#include "worker/data_loop.h"
#include "worker/stage_executor.h"
#include "worker/tp_group.h"

namespace strata::worker {
namespace {

using std::chrono::milliseconds;
using transport::LoopbackNetwork;

// One rank: backend, group, executor, KV pool, runner, loop and endpoint.
struct Rank {
  kernels::ReferenceBackend backend{1};
  std::unique_ptr<TpGroup> group;
  std::unique_ptr<StageExecutor> executor;
  std::unique_ptr<kernels::KvCache> cache;
  std::unique_ptr<StepRunner> runner;
  std::unique_ptr<transport::LoopbackTransport> endpoint;
  std::unique_ptr<WorkerMetrics> metrics;
  AbortList aborts;
  std::unique_ptr<DataLoop> loop;
  ~Rank() {
    if (loop) loop->Stop();
  }
};

class TpDataLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model::MakeModelOptions o;
    o.config = *model::LlamaPreset("tiny");
    o.dtype = model::DType::kF32;
    o.seed = 5;
    ASSERT_TRUE(model::WriteRandomModel(&fs_, "m", o).ok());
    ckpt_ = std::move(*model::Checkpoint::Open(&fs_, "m"));
    router_ = net_.Listen();
    store_ = absl::StrCat("127.0.0.1:", base::PickFreePort());
  }

  // Rank `rank` of a one-stage pipeline of `tp` ranks.
  std::unique_ptr<Rank> MakeRank(int rank, int tp, bool await_registration = false) {
    auto r = std::make_unique<Rank>();
    const int64_t layers = ckpt_->config().num_layers;
    auto place = *model::StagePlace::Create(0, 1, rank, tp, layers);
    TpGroupOptions g;
    g.pipeline = "p0";
    g.host = "127.0.0.1";
    g.store = store_;
    g.timeout = milliseconds(3000);
    auto group = TpGroup::Create(place, &r->backend, g);
    EXPECT_TRUE(group.ok()) << group.status();
    if (!group.ok()) return nullptr;
    r->group = std::move(*group);
    StageSpec spec{place.first_layer(), place.last_layer(), true, true, rank, tp};
    r->executor = std::move(*StageExecutor::Load(&r->backend, *ckpt_, spec, r->group->communicator()));
    r->cache = std::move(*r->backend.AllocateKvCache(r->executor->KvShape(16, 16)));
    r->runner = std::make_unique<StepRunner>(r->executor.get(), r->cache.get());
    r->endpoint = net_.Listen();
    r->metrics = std::make_unique<WorkerMetrics>(WorkerLabels{"m", "p0", 0, rank});
    DataLoopOptions d;
    d.pipeline = "p0";
    d.result_address = router_->address();
    d.step_timeout = milliseconds(2000);
    d.await_registration = await_registration;
    d.log_prefix = absl::StrCat("test rank ", rank);
    r->loop = std::make_unique<DataLoop>(place, d, r->endpoint.get(), r->runner.get(), &r->aborts, r->metrics.get(),
                                         r->group.get());
    r->loop->Start();
    return r;
  }

  static transport::StepPlan Plan(uint64_t step, std::vector<int32_t> tokens, int32_t cached = 0) {
    transport::StepPlan p;
    p.step_id = step;
    p.sequences.resize(1);
    p.sequences[0].seq_id = 5;
    p.sequences[0].num_tokens = static_cast<int32_t>(tokens.size());
    p.sequences[0].cached_tokens = cached;
    p.sequences[0].block_table = {0};
    p.sequences[0].sample = true;
    p.token_ids = std::move(tokens);
    return p;
  }

  void Send(const std::vector<Rank*>& to, const transport::StepPlan& plan, uint64_t epoch) {
    const std::string bytes = transport::EncodePlan(plan);
    transport::WireHeader h;
    h.type = static_cast<uint16_t>(transport::MessageType::kStepPlan);
    h.step_id = plan.step_id;
    h.epoch = epoch;
    h.plan_bytes = static_cast<uint32_t>(bytes.size());
    for (Rank* r : to) {
      const int peer = *router_->Connect(*transport::ParseHostPort(r->endpoint->address(), "rank"));
      ASSERT_TRUE(router_->Send(peer, h, {{bytes.data(), bytes.size()}}, milliseconds(100)).ok());
    }
  }

  absl::StatusOr<transport::StepResult> NextResult(milliseconds wait = milliseconds(15000)) {
    auto m = router_->Receive(wait);
    if (!m.ok()) return m.status();
    return transport::DecodeResult(m->payload(), m->header.payload_bytes);
  }

  // The greedy token of `tokens` on the unsplit stage.
  int32_t OneRankToken(const std::vector<int32_t>& tokens) {
    std::unique_ptr<Rank> alone = MakeRank(0, 1);
    Send({alone.get()}, Plan(1, tokens), 1);
    auto r = NextResult();
    EXPECT_TRUE(r.ok() && r->ok());
    return r.ok() ? r->sequences[0].token : -1;
  }

  model::InMemoryFileSystem fs_;
  std::unique_ptr<model::Checkpoint> ckpt_;
  LoopbackNetwork net_;
  std::unique_ptr<transport::LoopbackTransport> router_;
  std::string store_;
};

TEST_F(TpDataLoopTest, TheRanksFormTheirGroupAtTheFirstStepAndServeLikeOne) {
  const int32_t want = OneRankToken({3, 1, 4, 1, 5});
  auto r0 = MakeRank(0, 2), r1 = MakeRank(1, 2);
  Send({r0.get(), r1.get()}, Plan(1, {3, 1, 4, 1, 5}), 7);
  auto r = NextResult();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->ok()) << r->error;
  EXPECT_EQ(r->sequences[0].token, want);
}

TEST_F(TpDataLoopTest, AnAbortOneRankSawFirstDoesNotSplitTheGroup) {
  auto r0 = MakeRank(0, 2), r1 = MakeRank(1, 2);
  Send({r0.get(), r1.get()}, Plan(1, {2, 7}), 7);
  ASSERT_TRUE(NextResult().ok());
  // The router's Abort reached rank 0 and not yet rank 1: had rank 0
  // dropped step 2, its step 3 (one row) would meet rank 1's step 2
  // (three rows) in the same collective.
  r0->aborts.Add(2, std::vector<uint64_t>{});
  Send({r0.get(), r1.get()}, Plan(2, {1, 8, 2}, 2), 7);
  Send({r0.get(), r1.get()}, Plan(3, {8}, 5), 7);
  for (uint64_t step : {2u, 3u}) {
    auto r = NextResult();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->ok()) << r->error;
    EXPECT_EQ(r->step_id, step);
  }
}

class RestartTest : public TpDataLoopTest, public ::testing::WithParamInterface<int> {};

TEST_P(RestartTest, ADeadRankFailsItsPeersStepAndARestartedOneRejoinsAtTheNextEpoch) {
  const int dies = GetParam();
  const int32_t want = OneRankToken({6, 6, 1});
  std::unique_ptr<Rank> ranks[2] = {MakeRank(0, 2), MakeRank(1, 2)};
  Send({ranks[0].get(), ranks[1].get()}, Plan(1, {9, 9}), 7);
  ASSERT_TRUE(NextResult().ok());
  ranks[dies].reset();  // gone, with its Gloo connections (and, for rank 0, the store)
  if (dies == 1) {
    // Rank 0 meets the dead peer in its first collective: a typed failure
    // for the router, and the process lives.
    Send({ranks[0].get()}, Plan(2, {4}, 2), 7);
    auto failed = NextResult();
    ASSERT_TRUE(failed.ok()) << failed.status();
    EXPECT_EQ(failed->status().code(), absl::StatusCode::kUnavailable) << failed->error;
    EXPECT_EQ(failed->step_id, 2u);
    // Later steps of the epoch fail at once, without a collective.
    Send({ranks[0].get()}, Plan(3, {4}, 2), 7);
    auto again = NextResult();
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(again->error.find("failed earlier in this epoch"), std::string::npos) << again->error;
  }
  ranks[dies] = MakeRank(dies, 2);
  // The router brings the pipeline up again: a new epoch, whose first step
  // re-forms the group on both ranks.
  Send({ranks[0].get(), ranks[1].get()}, Plan(4, {6, 6, 1}), 8);
  auto r = NextResult();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->ok()) << r->error;
  EXPECT_EQ(r->step_id, 4u);
  EXPECT_EQ(r->sequences[0].token, want);
}

INSTANTIATE_TEST_SUITE_P(EitherRank, RestartTest, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int>& i) { return absl::StrCat("Rank", i.param); });

TEST_F(TpDataLoopTest, StepsOfAnEarlierEpochAreStale) {
  auto r0 = MakeRank(0, 2), r1 = MakeRank(1, 2);
  Send({r0.get(), r1.get()}, Plan(1, {2}), 8);
  ASSERT_TRUE(NextResult().ok());
  Send({r0.get(), r1.get()}, Plan(2, {3}, 1), 7);
  Send({r0.get(), r1.get()}, Plan(3, {3}, 1), 8);
  auto r = NextResult();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok()) << r->error;
  EXPECT_EQ(r->step_id, 3u);
  EXPECT_EQ(r0->metrics->steps_aborted->Value(), 1);
  EXPECT_EQ(r1->metrics->steps_aborted->Value(), 1);
}

TEST_F(TpDataLoopTest, AWorkerThatRegistersTakesNoStepBeforeItsAnswerNorBelowItsFloor) {
  auto w = MakeRank(0, 1, /*await_registration=*/true);
  Send({w.get()}, Plan(1, {2}), 50);
  EXPECT_FALSE(NextResult(milliseconds(300)).ok());  // before the router answered: an earlier router's step
  w->loop->SetEpochFloor(100);
  Send({w.get()}, Plan(2, {2}), 99);
  Send({w.get()}, Plan(3, {2}), 100);
  auto r = NextResult();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->step_id, 3u);
  EXPECT_EQ(w->metrics->steps_aborted->Value(), 2);
  // A re-registration (a restarted router, its clock behind): its floor
  // and epochs are below the old one's, and they still begin an epoch.
  w->loop->SetEpochFloor(20);
  Send({w.get()}, Plan(4, {2}), 30);
  auto after = NextResult();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->step_id, 4u);
}

}  // namespace
}  // namespace strata::worker
