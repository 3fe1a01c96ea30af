// The fleet: plan checks (a worker whose identity, model or layer range
// does not fit its pipeline is refused with the reason, and a replica that
// covers the model exactly once is accepted), the replica state machine,
// and heartbeats over a fake control plane.
#include "router/fleet.h"

#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace strata::router {
namespace {

using std::chrono::milliseconds;

// A control plane whose workers answer as the test says.
class FakeControl : public WorkerControl {
 public:
  std::vector<Probe> ProbeAll(const std::vector<ProbeTarget>& targets, milliseconds) override {
    std::lock_guard<std::mutex> lock(mu);
    probes += 1;
    std::vector<Probe> alive;
    for (const ProbeTarget& t : targets) {
      alive.push_back(gone.count(t.control_address)       ? Probe::kGone
                      : silent.count(t.control_address)   ? Probe::kSilent
                      : draining.count(t.control_address) ? Probe::kDraining
                                                          : Probe::kAlive);
    }
    return alive;
  }
  void AbortAll(const std::vector<std::string>& addresses, uint64_t up_to) override {
    std::lock_guard<std::mutex> lock(mu);
    aborts.push_back({addresses.size(), up_to});
  }
  absl::Status SetDataKeyAll(const std::vector<std::string>&, uint64_t, const std::string&,
                             std::chrono::milliseconds) override {
    return absl::OkStatus();  // the fleet never keys; the dispatcher does
  }
  void Forget(const std::string& address) override {
    std::lock_guard<std::mutex> lock(mu);
    forgotten.push_back(address);
  }
  std::mutex mu;
  std::vector<std::string> forgotten;
  std::set<std::string> silent;
  std::set<std::string> gone;
  std::set<std::string> draining;
  int probes = 0;
  std::vector<std::pair<size_t, uint64_t>> aborts;
};

v1::RegisterRequest Worker(int stage, int stages, int rank, int tp, int first, int last) {
  v1::RegisterRequest r;
  auto* id = r.mutable_identity();
  id->set_pipeline("p0");
  id->set_stage(stage);
  id->set_num_stages(stages);
  id->set_tp_rank(rank);
  id->set_tp_size(tp);
  id->set_first_layer(first);
  id->set_last_layer(last);
  id->set_has_embedding(stage == 0);
  id->set_has_lm_head(stage + 1 == stages);
  r.set_model_name("m");
  r.mutable_shape()->set_num_layers(8);
  r.mutable_shape()->set_vocab_size(512);
  r.mutable_shape()->set_hidden_size(64);
  r.mutable_shape()->set_max_position_embeddings(4096);
  r.set_control_address("127.0.0.1:1");
  r.set_data_address("127.0.0.1:2");
  r.set_kv_num_blocks(100);
  r.set_kv_block_size(16);
  r.set_epoch(7);
  return r;
}

std::string Refusal(Fleet& e, const v1::RegisterRequest& r) { return std::string(e.Register(r).message()); }

TEST(FleetTest, RegistrationChecksThePlan) {
  FleetOptions o;
  o.heartbeat = std::chrono::milliseconds(100000);  // no probes during the test
  FakeControl control;
  Fleet engine(o, &control, nullptr);
  ASSERT_TRUE(engine.Register(Worker(0, 2, 0, 2, 0, 4)).ok());
  // Same stage, other rank, other layers.
  EXPECT_NE(Refusal(engine, Worker(0, 2, 1, 2, 0, 3)).find("holds layers [0, 4)"), std::string::npos);
  // A gap between stages.
  EXPECT_NE(Refusal(engine, Worker(1, 2, 0, 2, 5, 8)).find("cover each layer once"), std::string::npos);
  // The last stage must end at the last layer.
  EXPECT_NE(Refusal(engine, Worker(1, 2, 0, 2, 4, 7)).find("must end at layer 8"), std::string::npos);
  // Another TP size or stage count in the same pipeline.
  EXPECT_NE(Refusal(engine, Worker(1, 2, 0, 4, 4, 8)).find("tp_size 2"), std::string::npos);
  EXPECT_NE(Refusal(engine, Worker(1, 3, 0, 2, 4, 8)).find("2 stages"), std::string::npos);
  // Another model.
  v1::RegisterRequest other = Worker(1, 2, 0, 2, 4, 8);
  other.set_model_name("n");
  EXPECT_EQ(engine.Register(other).code(), absl::StatusCode::kFailedPrecondition);
  other = Worker(1, 2, 0, 2, 4, 8);
  other.mutable_shape()->set_vocab_size(1024);
  EXPECT_EQ(engine.Register(other).code(), absl::StatusCode::kFailedPrecondition);
  // Malformed identities.
  v1::RegisterRequest bad = Worker(2, 2, 0, 2, 4, 8);
  EXPECT_NE(Refusal(engine, bad).find("identity.stage"), std::string::npos);
  bad = Worker(1, 2, 2, 2, 4, 8);
  EXPECT_NE(Refusal(engine, bad).find("identity.tp_rank"), std::string::npos);
  bad = Worker(1, 2, 0, 2, 4, 9);
  EXPECT_NE(Refusal(engine, bad).find("layers"), std::string::npos);
  bad = Worker(1, 2, 0, 2, 4, 8);
  bad.mutable_identity()->set_has_embedding(true);
  EXPECT_NE(Refusal(engine, bad).find("embedding"), std::string::npos);
  bad = Worker(1, 2, 0, 2, 4, 8);
  bad.set_data_address("nowhere");
  EXPECT_NE(Refusal(engine, bad).find("HOST:PORT"), std::string::npos);
  bad = Worker(1, 2, 0, 2, 4, 8);
  bad.set_kv_num_blocks(0);
  EXPECT_FALSE(engine.Register(bad).ok());
  // The rest of a good plan.
  EXPECT_TRUE(engine.Register(Worker(0, 2, 1, 2, 0, 4)).ok());
  EXPECT_TRUE(engine.Register(Worker(1, 2, 0, 2, 4, 8)).ok());
  EXPECT_TRUE(engine.Register(Worker(1, 2, 1, 2, 4, 8)).ok());
  v1::ModelInfo info;
  int32_t up = 0, total = 0;
  ASSERT_TRUE(engine.Model(&info, &up, &total));
  EXPECT_EQ(total, 1);
  ASSERT_EQ(info.stages_size(), 2);
  EXPECT_EQ(info.stages(1).first_layer(), 4);
}

// Stages cut inside layer 4, after its attention: [0, 4.5) and [4.5, 8).
TEST(FleetTest, RegistrationChecksAPlanCutInsideALayer) {
  FleetOptions o;
  o.heartbeat = std::chrono::milliseconds(100000);
  FakeControl control;
  Fleet engine(o, &control, nullptr);
  v1::RegisterRequest first = Worker(0, 2, 0, 1, 0, 5);
  first.mutable_identity()->set_ends_after_attention(true);
  ASSERT_TRUE(engine.Register(first).ok());
  // Layer 4 whole on the second stage would run its attention twice.
  EXPECT_NE(Refusal(engine, Worker(1, 2, 0, 1, 4, 8)).find("ends at layer 4.5 but stage 1 starts at 4"),
            std::string::npos);
  EXPECT_NE(Refusal(engine, Worker(1, 2, 0, 1, 5, 8)).find("ends at layer 4.5 but stage 1 starts at 5"),
            std::string::npos);
  // Nothing left of a one-layer range without its attention and its MLP.
  v1::RegisterRequest empty = Worker(1, 2, 0, 1, 7, 8);
  empty.mutable_identity()->set_starts_at_mlp(true);
  empty.mutable_identity()->set_ends_after_attention(true);
  EXPECT_NE(Refusal(engine, empty).find("non-empty"), std::string::npos);
  v1::RegisterRequest second = Worker(1, 2, 0, 1, 4, 8);
  second.mutable_identity()->set_starts_at_mlp(true);
  ASSERT_TRUE(engine.Register(second).ok());
  v1::ModelInfo info;
  int32_t up = 0, total = 0;
  ASSERT_TRUE(engine.Model(&info, &up, &total));
  ASSERT_EQ(info.stages_size(), 2);
  EXPECT_TRUE(info.stages(0).ends_after_attention());
  EXPECT_FALSE(info.stages(0).starts_at_mlp());
  EXPECT_TRUE(info.stages(1).starts_at_mlp());
  EXPECT_EQ(info.stages(1).first_layer(), 4);
  EXPECT_EQ(info.stages(0).last_layer(), 5);
}

TEST(FleetTest, RefusesAnAbsurdKvPool) {
  FakeControl control;
  Fleet fleet({}, &control, nullptr);
  v1::RegisterRequest huge = Worker(0, 1, 0, 1, 0, 8);
  huge.set_kv_num_blocks(int64_t{1} << 40);
  absl::Status s = fleet.Register(huge);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("kv_num_blocks"), std::string::npos) << s;
}

// Two stages of one rank, each at its own control address.
void RegisterPipeline(Fleet& fleet, const std::string& name, uint64_t epoch = 7) {
  for (int stage = 0; stage < 2; ++stage) {
    v1::RegisterRequest r = Worker(stage, 2, 0, 1, stage * 4, stage * 4 + 4);
    r.mutable_identity()->set_pipeline(name);
    r.set_control_address(absl::StrCat("127.0.0.1:", 100 + stage));
    r.set_data_address(absl::StrCat("127.0.0.1:", 200 + stage));
    r.set_kv_num_blocks(100 - stage);
    r.set_epoch(epoch);
    ASSERT_TRUE(fleet.Register(r).ok());
  }
}

// A replica's plan moves its boundaries only when every member holds the
// MLP beside its boundaries; the model info says which stages do.
TEST(FleetTest, BoundariesMoveOnlyWhenEveryMemberHoldsTheirMlps) {
  for (const bool second_movable : {false, true}) {
    SCOPED_TRACE(second_movable ? "both movable" : "only stage 0 movable");
    FleetOptions o;
    o.heartbeat = milliseconds(1);
    FakeControl control;
    Fleet fleet(o, &control, nullptr);
    v1::RegisterRequest first = Worker(0, 2, 0, 1, 0, 4);
    first.mutable_identity()->set_movable_boundaries(true);
    v1::RegisterRequest second = Worker(1, 2, 0, 1, 4, 8);
    second.set_control_address("127.0.0.1:3");
    second.mutable_identity()->set_movable_boundaries(second_movable);
    ASSERT_TRUE(fleet.Register(first).ok());
    ASSERT_TRUE(fleet.Register(second).ok());
    std::this_thread::sleep_for(milliseconds(5));
    auto ready = fleet.TakeReadyToWarm();
    ASSERT_EQ(ready.size(), 1u);
    EXPECT_EQ(ready[0].movable_boundaries, second_movable);
    v1::ModelInfo info;
    int32_t up = 0, total = 0;
    ASSERT_TRUE(fleet.Model(&info, &up, &total));
    ASSERT_EQ(info.stages_size(), 2);
    EXPECT_TRUE(info.stages(0).movable_boundaries());
    EXPECT_EQ(info.stages(1).movable_boundaries(), second_movable);
  }
  // One stage has no boundary to move.
  FleetOptions o;
  o.heartbeat = milliseconds(1);
  FakeControl control;
  Fleet fleet(o, &control, nullptr);
  v1::RegisterRequest only = Worker(0, 1, 0, 1, 0, 8);
  only.mutable_identity()->set_movable_boundaries(true);
  ASSERT_TRUE(fleet.Register(only).ok());
  std::this_thread::sleep_for(milliseconds(5));
  auto ready = fleet.TakeReadyToWarm();
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_FALSE(ready[0].movable_boundaries);
}

TEST(FleetTest, StateMachineFormingWarmingUpDownDraining) {
  FleetOptions o;
  o.heartbeat = milliseconds(20);
  o.down_after = milliseconds(60);
  FakeControl control;
  Fleet fleet(o, &control, nullptr);
  v1::RegisterRequest first = Worker(0, 2, 0, 1, 0, 4);
  ASSERT_TRUE(fleet.Register(first).ok());
  EXPECT_TRUE(fleet.TakeReadyToWarm().empty()) << "an incomplete replica never warms up";
  EXPECT_EQ(fleet.state("p0"), PipelineState::kForming);
  RegisterPipeline(fleet, "p0");
  auto ready = fleet.TakeReadyToWarm();
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].num_blocks, 99);  // the smallest pool of the members
  EXPECT_EQ(ready[0].stage0_data, std::vector<std::string>{"127.0.0.1:200"});
  EXPECT_EQ(ready[0].control.size(), 2u);
  EXPECT_EQ(fleet.state("p0"), PipelineState::kWarming);
  EXPECT_TRUE(fleet.TakeReadyToWarm().empty()) << "warming: not handed out twice";
  EXPECT_EQ(fleet.pipelines_up(), 0);
  fleet.MarkUp("p0");
  EXPECT_EQ(fleet.state("p0"), PipelineState::kUp);
  EXPECT_EQ(fleet.pipelines_up(), 1);
  // A driver's verdict takes it down; once healthy it is handed out again,
  // but not before a heartbeat interval passed since the last warm-up.
  fleet.MarkDown("p0", "step 3 got no result");
  EXPECT_EQ(fleet.pipelines_up(), 0);
  EXPECT_EQ(fleet.down_reason("p0"), "step 3 got no result");
  EXPECT_TRUE(fleet.TakeReadyToWarm().empty());
  std::this_thread::sleep_for(milliseconds(25));
  ASSERT_EQ(fleet.TakeReadyToWarm().size(), 1u);
  fleet.MarkUp("p0");
  fleet.DrainAll();
  EXPECT_EQ(fleet.state("p0"), PipelineState::kDraining);
  EXPECT_EQ(fleet.pipelines_up(), 0);
  EXPECT_TRUE(fleet.TakeDownEvents().empty());
}

TEST(FleetTest, HeartbeatsTakeASilentReplicaDownAndBringItBack) {
  FleetOptions o;
  o.heartbeat = milliseconds(20);
  o.down_after = milliseconds(60);
  FakeControl control;
  Fleet fleet(o, &control, nullptr);
  RegisterPipeline(fleet, "p0");
  RegisterPipeline(fleet, "p1");
  for (const auto& plan : fleet.TakeReadyToWarm()) fleet.MarkUp(plan.name);
  EXPECT_EQ(fleet.pipelines_up(), 2);
  fleet.Beat();
  EXPECT_EQ(fleet.pipelines_up(), 2);
  {
    std::lock_guard<std::mutex> lock(control.mu);
    control.silent.insert("127.0.0.1:101");  // stage 1 of both replicas goes quiet
  }
  std::this_thread::sleep_for(milliseconds(80));
  fleet.Beat();
  EXPECT_EQ(fleet.state("p0"), PipelineState::kDown);
  EXPECT_EQ(fleet.pipelines_up(), 0);
  auto events = fleet.TakeDownEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_NE(events[0].why.find("stage 1 rank 0 has not answered"), std::string::npos) << events[0].why;
  EXPECT_TRUE(fleet.TakeReadyToWarm().empty()) << "a silent member keeps its replica down";
  {
    std::lock_guard<std::mutex> lock(control.mu);
    control.silent.clear();
  }
  fleet.Beat();
  EXPECT_EQ(fleet.TakeReadyToWarm().size(), 2u);
}

TEST(FleetTest, ARestartedMemberTakesItsReplicaDown) {
  FakeControl control;
  Fleet fleet({}, &control, nullptr);
  RegisterPipeline(fleet, "p0", 7);
  for (const auto& plan : fleet.TakeReadyToWarm()) fleet.MarkUp(plan.name);
  v1::RegisterRequest again = Worker(1, 2, 0, 1, 4, 8);
  again.set_control_address("127.0.0.1:101");
  again.set_epoch(8);
  control.forgotten.clear();
  ASSERT_TRUE(fleet.Register(again).ok());
  EXPECT_EQ(fleet.state("p0"), PipelineState::kDown);
  auto events = fleet.TakeDownEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_NE(events[0].why.find("restarted (new epoch)"), std::string::npos);
  // The channel to the old process at that address is dropped, so no
  // heartbeat waits out a dead connection's reconnect backoff.
  EXPECT_EQ(control.forgotten, std::vector<std::string>{"127.0.0.1:101"});
  // The same epoch again (a retried registration) changes nothing.
  control.forgotten.clear();
  ASSERT_TRUE(fleet.Register(again).ok());
  EXPECT_TRUE(fleet.TakeDownEvents().empty());
  EXPECT_TRUE(control.forgotten.empty());
}

TEST(FleetTest, HeartbeatThreadProbesWithoutAThreadPerWorker) {
  FleetOptions o;
  o.heartbeat = milliseconds(10);
  FakeControl control;
  {
    Fleet fleet(o, &control, nullptr);
    RegisterPipeline(fleet, "p0");
    fleet.StartHeartbeats();
    std::this_thread::sleep_for(milliseconds(100));
  }  // the destructor stops the heartbeats
  std::lock_guard<std::mutex> lock(control.mu);
  EXPECT_GE(control.probes, 3);
}


TEST(FleetTest, AGoneMemberTakesItsReplicaDownAfterGoneAfterProbesBeats) {
  FleetOptions o;
  o.heartbeat = milliseconds(20);
  o.gone_after_probes = 2;
  o.down_after = milliseconds(100000);  // silence alone would take long
  FakeControl control;
  Fleet fleet(o, &control, nullptr);
  RegisterPipeline(fleet, "p0");
  for (const auto& plan : fleet.TakeReadyToWarm()) fleet.MarkUp(plan.name);
  {
    std::lock_guard<std::mutex> lock(control.mu);
    control.gone.insert("127.0.0.1:100");  // stage 0's process is gone
  }
  fleet.Beat();
  EXPECT_EQ(fleet.state("p0"), PipelineState::kUp) << "one refused probe is not enough";
  fleet.Beat();
  EXPECT_EQ(fleet.state("p0"), PipelineState::kDown);
  auto events = fleet.TakeDownEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_NE(events[0].why.find("stage 0 rank 0 is gone"), std::string::npos) << events[0].why;
  std::this_thread::sleep_for(milliseconds(25));
  EXPECT_TRUE(fleet.TakeReadyToWarm().empty()) << "not while the member is gone";
  {
    std::lock_guard<std::mutex> lock(control.mu);
    control.gone.clear();
  }
  fleet.Beat();
  EXPECT_EQ(fleet.TakeReadyToWarm().size(), 1u);
}

// A replica whose warm-ups fail before their first step (stage 0 does not
// answer) is tried again after one heartbeat, then two, four... up to
// max_warm_up_backoff; once one succeeds, one heartbeat again. A failure
// reported for a warm-up that is no longer current changes nothing.
TEST(FleetTest, FailedWarmUpsBackOff) {
  FleetOptions o;
  o.heartbeat = milliseconds(20);
  o.down_after = milliseconds(100000);
  o.max_warm_up_backoff = milliseconds(80);
  FakeControl control;
  Fleet fleet(o, &control, nullptr);
  RegisterPipeline(fleet, "p0");
  // How long after a failure the next warm-up is handed out.
  auto fail_and_time = [&](uint64_t warm_up) {
    fleet.WarmUpFailed("p0", warm_up, "cannot reach stage 0 rank 0");
    EXPECT_EQ(fleet.state("p0"), PipelineState::kDown);
    const auto start = std::chrono::steady_clock::now();
    while (true) {
      auto ready = fleet.TakeReadyToWarm();
      if (!ready.empty()) {
        EXPECT_EQ(ready[0].warm_up, warm_up + 1);
        return std::make_pair(std::chrono::steady_clock::now() - start, ready[0].warm_up);
      }
      std::this_thread::sleep_for(milliseconds(1));
    }
  };
  auto ready = fleet.TakeReadyToWarm();
  ASSERT_EQ(ready.size(), 1u);
  uint64_t warm_up = ready[0].warm_up;
  EXPECT_TRUE(fleet.Warming("p0", warm_up));
  fleet.WarmUpFailed("p0", warm_up + 7, "a stale warm-up's failure");
  EXPECT_EQ(fleet.state("p0"), PipelineState::kWarming);
  std::vector<milliseconds> waits;
  for (int i = 0; i < 4; ++i) {
    auto [waited, next] = fail_and_time(warm_up);
    waits.push_back(std::chrono::duration_cast<milliseconds>(waited));
    warm_up = next;
  }
  // 40, 80, 80, 80 ms (the first failure doubles the heartbeat; the cap holds).
  EXPECT_GE(waits[0], milliseconds(30));
  EXPECT_GE(waits[1], milliseconds(70));
  EXPECT_GE(waits[3], milliseconds(70));
  EXPECT_LT(waits[3], milliseconds(250)) << "the cap (without it: 320 ms)";
  fleet.MarkUp("p0");
  fleet.MarkDown("p0", "step 3 got no result");
  std::this_thread::sleep_for(milliseconds(25));
  EXPECT_EQ(fleet.TakeReadyToWarm().size(), 1u) << "a replica that was up waits one heartbeat again";
}

// A member that answers DRAINING (its worker got SIGTERM) takes its replica
// down at the next heartbeat, with the cause its requests' moves are
// counted under, and the replica is not warmed up again while it drains.
TEST(FleetTest, ADrainingMemberTakesItsReplicaDownAtTheNextHeartbeat) {
  FleetOptions o;
  o.heartbeat = milliseconds(10);
  o.down_after = milliseconds(100000);
  FakeControl control;
  Fleet fleet(o, &control, nullptr);
  RegisterPipeline(fleet, "p0");
  for (const auto& plan : fleet.TakeReadyToWarm()) fleet.MarkUp(plan.name);
  {
    std::lock_guard<std::mutex> lock(control.mu);
    control.draining.insert("127.0.0.1:101");
  }
  fleet.Beat();
  EXPECT_EQ(fleet.state("p0"), PipelineState::kDown);
  auto events = fleet.TakeDownEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].cause, DownCause::kDrainingStage);
  EXPECT_STREQ(DownCauseLabel(events[0].cause), "draining_stage");
  EXPECT_NE(events[0].why.find("stage 1 rank 0 is draining"), std::string::npos) << events[0].why;
  std::this_thread::sleep_for(milliseconds(15));
  EXPECT_TRUE(fleet.TakeReadyToWarm().empty()) << "warmed up while a member drains";
  {
    std::lock_guard<std::mutex> lock(control.mu);
    control.draining.clear();  // it restarted and serves again
  }
  fleet.Beat();
  EXPECT_EQ(fleet.TakeReadyToWarm().size(), 1u);
}

}  // namespace
}  // namespace strata::router
