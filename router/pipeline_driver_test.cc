// The pipeline driver over the loopback transport, with the test's thread
// playing stage 0 (and the last stage: it answers each plan with a result):
// warm-up, steps in flight, and the faults a real pipeline has: a result
// that never comes, a late result from before the replica went down, a send
// that fails, a hung stage 0, a stage that reports an error code, tokens
// outside the vocabulary. Plus the stage timings and the bubble.
#include "router/pipeline_driver.h"

#include <thread>

#include "gtest/gtest.h"
#include "transport/loopback_transport.h"

namespace strata::router {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using transport::LoopbackNetwork;
using transport::LoopbackTransport;
using transport::StepPlan;
using transport::StepResult;

class PipelineDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router_ = net_.Listen();
    stage0_ = net_.Listen();
    options_.step_timeout = milliseconds(200);
    options_.vocab_size = 100;
    options_.bubble_window = milliseconds(0);
    driver_ = std::make_unique<PipelineDriver>("p0", router_.get(), &next_step_, options_, nullptr);
    plan_.name = "p0";
    plan_.num_stages = 2;
    plan_.tp_size = 1;
    plan_.num_blocks = 64;
    plan_.block_size = 4;
    plan_.stage0_data = {stage0_->address()};
    plan_.control = {"127.0.0.1:1", "127.0.0.1:2"};
  }

  // What stage 0 received next.
  StepPlan NextPlan() {
    auto m = stage0_->Receive(milliseconds(1000));
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return {};
    auto plan = transport::DecodePlan(m->plan(), m->header.plan_bytes);
    EXPECT_TRUE(plan.ok()) << plan.status();
    return plan.ok() ? *plan : StepPlan();
  }

  // The pipeline's answer to `plan`: each sampling sequence gets token 7.
  static StepResult Answer(const StepPlan& plan, absl::Status status = absl::OkStatus()) {
    StepResult r;
    r.step_id = plan.step_id;
    r.SetStatus(status);
    r.timings = {{0, 0.0f, 0.010f, 0.002f, 0.001f}, {1, 0.0f, 0.012f, 0.002f, 0.0f}};
    if (!status.ok()) return r;
    for (const auto& s : plan.sequences) {
      transport::SequenceResult sr;
      sr.seq_id = s.seq_id;
      sr.token = s.sample ? 7 : -1;
      r.sequences.push_back(sr);
    }
    return r;
  }

  void WarmUp() {
    ASSERT_TRUE(driver_->BringUp(plan_, 1).ok());
    EXPECT_TRUE(driver_->warming());
    StepPlan warm = NextPlan();
    ASSERT_EQ(warm.token_ids, std::vector<int32_t>{1});
    std::string why;
    ASSERT_EQ(driver_->OnResult(Answer(warm), Clock::now(), &why), PipelineDriver::ResultOutcome::kWarmedUp);
    ASSERT_TRUE(driver_->up());
  }

  SequenceSpec Spec(int32_t max_tokens) {
    SequenceSpec s;
    s.prompt = {1, 2, 3};
    s.max_tokens = max_tokens;
    return s;
  }

  LoopbackNetwork net_;
  std::unique_ptr<LoopbackTransport> router_, stage0_;
  uint64_t next_step_ = 1;
  DriverOptions options_;
  PipelinePlan plan_;
  std::unique_ptr<PipelineDriver> driver_;
};

TEST_F(PipelineDriverTest, RunsSequencesWithUpToSStepsInFlight) {
  WarmUp();
  RequestStream a, b;
  driver_->Add(Spec(3), &a);
  driver_->Add(Spec(2), &b);
  EXPECT_EQ(driver_->Tick(Clock::now()), std::nullopt);
  // Two stages: two micro-batches in flight, each with its share.
  EXPECT_EQ(driver_->in_flight(), 2u);
  std::string why;
  for (int i = 0; i < 20 && driver_->in_flight() > 0; ++i) {
    StepPlan p = NextPlan();
    EXPECT_EQ(p.sequences.size(), 1u) << "step " << i;
    EXPECT_EQ(driver_->OnResult(Answer(p), Clock::now(), &why), PipelineDriver::ResultOutcome::kApplied);
    EXPECT_EQ(driver_->Tick(Clock::now()), std::nullopt);
    EXPECT_LE(driver_->in_flight(), 2u);
  }
  RequestStream::Event ea = a.Next(milliseconds(10)), eb = b.Next(milliseconds(10));
  EXPECT_TRUE(ea.finished && eb.finished);
  EXPECT_EQ(ea.reason, Finish::kLength);
  EXPECT_EQ(ea.tokens.size(), 3u);
  EXPECT_EQ(eb.tokens.size(), 2u);
  EXPECT_EQ(driver_->in_flight(), 0u);
  EXPECT_NE(a.first_scheduled(), Clock::time_point());
  // The bubble from the stage timings: (10 + 2) and (12 + 2) ms of work per
  // step against the in-flight time the test took; a ratio in [0, 1].
  EXPECT_GE(driver_->bubble(), 0.0);
  EXPECT_LE(driver_->bubble(), 1.0);
}

TEST_F(PipelineDriverTest, AResultThatNeverComesTimesTheStepOut) {
  WarmUp();
  RequestStream a;
  driver_->Add(Spec(4), &a);
  ASSERT_EQ(driver_->Tick(Clock::now()), std::nullopt);
  (void)NextPlan();  // ... and never answered
  auto why = driver_->Tick(Clock::now() + milliseconds(300));
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(why->code(), absl::StatusCode::kDeadlineExceeded) << *why;
  EXPECT_NE(why->message().find("got no result within 200 ms"), std::string::npos) << *why;
  const uint64_t last = driver_->TakeDown(std::string(why->message()));
  EXPECT_EQ(last, next_step_ - 1);
  RequestStream::Event e = a.Next(milliseconds(10));
  EXPECT_TRUE(e.finished);
  EXPECT_EQ(e.reason, Finish::kUnavailable);
  EXPECT_NE(e.error.find("pipeline p0 is down"), std::string::npos) << e.error;
  EXPECT_FALSE(driver_->up());
}

// A pipeline that stops moving while its processes still answer (a cut
// link between stages) is down once a step stays out far longer than the
// steps before it took, long before the step timeout.
TEST_F(PipelineDriverTest, AStepFarSlowerThanTheOnesBeforeItTripsTheWatchdog) {
  options_.step_timeout = milliseconds(60000);
  options_.watchdog_floor = milliseconds(100);
  options_.watchdog_factor = 4;
  driver_ = std::make_unique<PipelineDriver>("p0", router_.get(), &next_step_, options_, nullptr);
  WarmUp();
  RequestStream a;
  driver_->Add(Spec(10), &a);
  auto t = Clock::now();
  std::string why;
  for (int i = 0; i < 4; ++i) {  // the prompt, then decode steps of one row: 10 ms each
    ASSERT_EQ(driver_->Tick(t), std::nullopt);
    StepPlan p = NextPlan();
    t += milliseconds(10);
    ASSERT_EQ(driver_->OnResult(Answer(p), t, &why), PipelineDriver::ResultOutcome::kApplied);
  }
  ASSERT_EQ(driver_->Tick(t), std::nullopt);
  (void)NextPlan();  // ... and never answered
  EXPECT_EQ(driver_->Tick(t + milliseconds(130)), std::nullopt);  // under 100 + 4 x 10 ms
  auto late = driver_->Tick(t + milliseconds(150));
  ASSERT_TRUE(late.has_value());
  EXPECT_EQ(late->code(), absl::StatusCode::kDeadlineExceeded) << *late;
  EXPECT_NE(late->message().find("the watchdog's deadline"), std::string::npos) << *late;
  EXPECT_NE(late->message().find("within 140 ms"), std::string::npos) << *late;
  (void)driver_->TakeDown(std::string(late->message()));
}

// Steps queue behind a slow one at each stage: the watchdog times each from
// the result before it, so a decode step behind a long prefill chunk is
// judged by its own time, not the chunk's.
TEST_F(PipelineDriverTest, TheWatchdogTimesAStepFromTheResultBeforeIt) {
  options_.step_timeout = milliseconds(60000);
  options_.watchdog_floor = milliseconds(100);
  options_.watchdog_factor = 4;
  driver_ = std::make_unique<PipelineDriver>("p0", router_.get(), &next_step_, options_, nullptr);
  WarmUp();
  RequestStream a, b;
  driver_->Add(Spec(10), &a);
  auto t = Clock::now();
  std::string why;
  for (int i = 0; i < 3; ++i) {  // a's prompt and decode steps, 10 ms each
    ASSERT_EQ(driver_->Tick(t), std::nullopt);
    StepPlan p = NextPlan();
    t += milliseconds(10);
    ASSERT_EQ(driver_->OnResult(Answer(p), t, &why), PipelineDriver::ResultOutcome::kApplied);
  }
  // Two steps go out together (2 stages): a's decode step, then b's.
  ASSERT_EQ(driver_->Tick(t), std::nullopt);
  driver_->Add(Spec(10), &b);
  ASSERT_EQ(driver_->Tick(t), std::nullopt);
  ASSERT_EQ(driver_->in_flight(), 2u);
  StepPlan first = NextPlan(), second = NextPlan();
  // The first comes back after 120 ms, within its 140 ms; the second, out
  // 130 ms by then, is timed from that result.
  t += milliseconds(120);
  ASSERT_EQ(driver_->Tick(t), std::nullopt);
  ASSERT_EQ(driver_->OnResult(Answer(first), t, &why), PipelineDriver::ResultOutcome::kApplied);
  EXPECT_EQ(driver_->Tick(t + milliseconds(100)), std::nullopt);
  (void)second;
  EXPECT_TRUE(driver_->Tick(t + milliseconds(2000)).has_value());
  (void)driver_->TakeDown("test");
}

TEST_F(PipelineDriverTest, EachBringUpCarriesANewEpoch) {
  uint64_t last = 0;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(driver_->BringUp(plan_, 1).ok());
    auto m = stage0_->Receive(milliseconds(1000));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_GT(m->header.epoch, last);
    last = m->header.epoch;
    (void)driver_->TakeDown("test");
  }
}

TEST_F(PipelineDriverTest, ALateResultFromBeforeTheReplicaWentDownIsIgnored) {
  WarmUp();
  RequestStream a;
  driver_->Add(Spec(4), &a);
  ASSERT_EQ(driver_->Tick(Clock::now()), std::nullopt);
  StepPlan old = NextPlan();
  driver_->TakeDown("stage 1 rank 0 restarted (new epoch)");
  WarmUp();
  RequestStream b;
  driver_->Add(Spec(1), &b);
  ASSERT_EQ(driver_->Tick(Clock::now()), std::nullopt);
  StepPlan now = NextPlan();
  std::string why;
  EXPECT_EQ(driver_->OnResult(Answer(old), Clock::now(), &why), PipelineDriver::ResultOutcome::kNotMine);
  EXPECT_FALSE(b.finished());
  EXPECT_EQ(driver_->OnResult(Answer(now), Clock::now(), &why), PipelineDriver::ResultOutcome::kApplied);
  RequestStream::Event e = b.Next(milliseconds(10));
  EXPECT_TRUE(e.finished);
  EXPECT_EQ(e.tokens.size(), 1u);
}

TEST_F(PipelineDriverTest, ASendThatFails) {
  net_.FailSendsTo(stage0_->address(), absl::UnavailableError("connection reset by peer"));
  absl::Status s = driver_->BringUp(plan_, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("warm-up send failed: connection reset"), std::string::npos) << s;
  net_.FailSendsTo(stage0_->address(), absl::OkStatus());
  WarmUp();
  RequestStream a;
  driver_->Add(Spec(2), &a);
  net_.FailSendsTo(stage0_->address(), absl::UnavailableError("connection reset by peer"));
  auto why = driver_->Tick(Clock::now());
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(why->code(), absl::StatusCode::kUnavailable) << *why;
  EXPECT_NE(why->message().find("sending a step to stage 0 failed"), std::string::npos) << *why;
  driver_->TakeDown(std::string(why->message()));
  EXPECT_EQ(a.Next(milliseconds(10)).reason, Finish::kUnavailable);
}

TEST_F(PipelineDriverTest, AHungStageZeroNeverBlocksTheDriver) {
  WarmUp();
  net_.HangSendsTo(stage0_->address(), true);
  RequestStream a;
  driver_->Add(Spec(2), &a);
  const auto start = Clock::now();
  EXPECT_EQ(driver_->Tick(Clock::now()), std::nullopt);  // posted, not waited for
  EXPECT_LT(Clock::now() - start, milliseconds(100));
  auto why = driver_->Tick(Clock::now() + milliseconds(300));
  ASSERT_TRUE(why.has_value());
  driver_->TakeDown(std::string(why->message()));
  net_.HangSendsTo(stage0_->address(), false);
  WarmUp();  // the hung send's buffers were kept until it let go
}

TEST_F(PipelineDriverTest, StageErrorCodes) {
  WarmUp();
  RequestStream a;
  driver_->Add(Spec(4), &a);
  ASSERT_EQ(driver_->Tick(Clock::now()), std::nullopt);
  std::string why;
  // Any code but UNAVAILABLE / DEADLINE_EXCEEDED fails the step's
  // sequences and keeps the replica up.
  EXPECT_EQ(driver_->OnResult(Answer(NextPlan(), absl::InvalidArgumentError("stage 1: block 99 outside the pool")),
                              Clock::now(), &why),
            PipelineDriver::ResultOutcome::kApplied);
  RequestStream::Event e = a.Next(milliseconds(10));
  EXPECT_TRUE(e.finished);
  EXPECT_EQ(e.reason, Finish::kError);
  EXPECT_NE(e.error.find("block 99"), std::string::npos);
  EXPECT_TRUE(driver_->up());
  // UNAVAILABLE takes it down, by its code: the text says nothing of it.
  RequestStream b;
  driver_->Add(Spec(4), &b);
  ASSERT_EQ(driver_->Tick(Clock::now()), std::nullopt);
  EXPECT_EQ(driver_->OnResult(Answer(NextPlan(), absl::UnavailableError("stage 1: peer gone")), Clock::now(), &why),
            PipelineDriver::ResultOutcome::kMustGoDown);
  EXPECT_EQ(why, "stage 1: peer gone");
  driver_->TakeDown(why);
  EXPECT_EQ(b.Next(milliseconds(10)).reason, Finish::kUnavailable);
  ASSERT_TRUE(driver_->BringUp(plan_, 1).ok());
  EXPECT_EQ(driver_->OnResult(Answer(NextPlan(), absl::InternalError("out of memory")), Clock::now(), &why),
            PipelineDriver::ResultOutcome::kMustGoDown);
  EXPECT_NE(why.find("warm-up step failed: out of memory"), std::string::npos) << why;
}

TEST_F(PipelineDriverTest, TokensOutsideTheVocabularyFailTheStep) {
  WarmUp();
  RequestStream a;
  driver_->Add(Spec(4), &a);
  ASSERT_EQ(driver_->Tick(Clock::now()), std::nullopt);
  StepResult forged = Answer(NextPlan());
  forged.sequences[0].token = 100;  // vocabulary of 100
  std::string why;
  EXPECT_EQ(driver_->OnResult(forged, Clock::now(), &why), PipelineDriver::ResultOutcome::kApplied);
  RequestStream::Event e = a.Next(milliseconds(10));
  EXPECT_TRUE(e.finished);
  EXPECT_EQ(e.reason, Finish::kError);
  EXPECT_TRUE(e.tokens.empty());
  EXPECT_NE(e.error.find("outside the vocabulary"), std::string::npos) << e.error;
}

// Movable boundaries: the driver marks each step's plan with the balancer's
// side. Here stage 0 is the heavier with the boundaries where they were
// placed (20 ms against 10) and the stages are even with them moved (14
// and 14): once both sides are learned, nearly every step runs moved (every
// 32nd tries the other side); a replica without movable boundaries never
// moves them.
TEST_F(PipelineDriverTest, MovableBoundariesMoveToTheSideTheStageTimesFavour) {
  for (const bool movable : {false, true}) {
    SCOPED_TRACE(movable ? "movable" : "fixed");
    plan_.movable_boundaries = movable;
    next_step_ = 1;
    driver_ = std::make_unique<PipelineDriver>("p0", router_.get(), &next_step_, options_, nullptr);
    WarmUp();
    RequestStream a, b;
    driver_->Add(Spec(100), &a);
    driver_->Add(Spec(100), &b);
    ASSERT_EQ(driver_->Tick(Clock::now()), std::nullopt);
    std::string why;
    int steps = 0, shifted = 0, late_steps = 0, late_shifted = 0;
    while (driver_->in_flight() > 0) {
      StepPlan p = NextPlan();
      ASSERT_FALSE(p.sequences.empty());
      StepResult r = Answer(p);
      r.timings[0].compute_seconds = p.shift_boundaries ? 0.014f : 0.020f;
      r.timings[1].compute_seconds = p.shift_boundaries ? 0.014f : 0.010f;
      ++steps;
      shifted += p.shift_boundaries ? 1 : 0;
      if (steps > 40) {
        ++late_steps;
        late_shifted += p.shift_boundaries ? 1 : 0;
      }
      ASSERT_EQ(driver_->OnResult(r, Clock::now(), &why), PipelineDriver::ResultOutcome::kApplied);
      ASSERT_EQ(driver_->Tick(Clock::now()), std::nullopt);
    }
    EXPECT_GE(steps, 190);
    if (!movable) {
      EXPECT_EQ(shifted, 0);
    } else {
      ASSERT_GT(late_steps, 100);
      EXPECT_GE(late_shifted, late_steps - late_steps / 32 - 2) << late_shifted << " of " << late_steps;
      EXPECT_LT(late_shifted, late_steps);  // the exploring steps
    }
    EXPECT_TRUE(a.Next(milliseconds(10)).finished);
    EXPECT_TRUE(b.Next(milliseconds(10)).finished);
    driver_->TakeDown("test over");
  }
}

}  // namespace
}  // namespace strata::router
