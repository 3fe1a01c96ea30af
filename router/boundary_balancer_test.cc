// The boundary balancer against a pipeline whose stage costs the test
// knows: it learns them from the timings alone, and moves the boundary for
// the steps (prefill chunks) that load the first stage while leaving it for
// those (decode steps) that load the last, beating both fixed placements.
#include "router/boundary_balancer.h"

#include <algorithm>
#include <random>

#include "gtest/gtest.h"

namespace strata::router {
namespace {

// Two stages: the first holds more layers, the last the lm_head; shifting
// moves one MLP block (a fixed and a per-row cost) from the first to the last.
struct FakePipeline {
  double Mlp(const StepShape& s) const { return 0.002 + 0.0001 * s.rows; }
  double Busy(int stage, const StepShape& s, bool shifted) const {
    const double placed = stage == 0 ? 0.01 + 0.001 * s.rows + 0.00002 * s.attention / 64
                                     : 0.008 + 0.0004 * s.rows + 0.0008 * s.sampled;
    return placed + (shifted ? (stage == 0 ? -Mlp(s) : Mlp(s)) : 0.0);
  }
  double Max(const StepShape& s, bool shifted) const { return std::max(Busy(0, s, shifted), Busy(1, s, shifted)); }
};

TEST(BoundaryBalancerTest, LearnsTheStagesAndMovesTheBoundaryPerStepKind) {
  FakePipeline truth;
  BoundaryBalancer balancer(2);
  std::mt19937 rng(5);
  std::normal_distribution<double> noise(1.0, 0.02);
  const StepShape prefill{256, 2, 256.0 * 128.5};
  const StepShape decode{64, 64, 64.0 * 300};
  double got = 0, placed = 0, shifted = 0, best = 0;
  int wrong = 0;
  for (int i = 0; i < 400; ++i) {
    const StepShape& s = (i / 3) % 2 == 0 ? prefill : decode;  // in waves, as a closed-loop load runs
    const bool shift = balancer.Choose(s);
    std::vector<transport::StageTiming> timings(2);
    for (int stage = 0; stage < 2; ++stage) {
      timings[stage].stage = stage;
      timings[stage].compute_seconds = static_cast<float>(truth.Busy(stage, s, shift) * 0.8 * noise(rng));
      timings[stage].allreduce_seconds = static_cast<float>(truth.Busy(stage, s, shift) * 0.2);
    }
    balancer.Record(s, shift, timings);
    if (i < 200) continue;
    got += truth.Max(s, shift);
    placed += truth.Max(s, false);
    shifted += truth.Max(s, true);
    best += std::min(truth.Max(s, false), truth.Max(s, true));
    wrong += shift != (truth.Max(s, true) < truth.Max(s, false)) ? 1 : 0;
  }
  for (const StepShape* s : {&prefill, &decode}) {
    for (int stage = 0; stage < 2; ++stage) {
      for (bool shift : {false, true}) {
        EXPECT_NEAR(balancer.Predict(stage, *s, shift), truth.Busy(stage, *s, shift),
                    0.05 * truth.Busy(stage, *s, shift))
            << "stage " << stage << " rows " << s->rows << (shift ? " shifted" : "");
      }
    }
  }
  // Only the exploring steps (one in 32) go the other way.
  EXPECT_LE(wrong, 200 / 32 + 1);
  EXPECT_LT(got, 0.99 * placed);
  EXPECT_LT(got, 0.99 * shifted);
  EXPECT_LT(got, 1.01 * best);
  EXPECT_GT(balancer.recorded(true), 8);
  EXPECT_GT(balancer.recorded(false), 8);
}

TEST(BoundaryBalancerTest, AlternatesUntilBothPlacementsAreSeen) {
  BoundaryBalancer balancer(2);
  const StepShape s{16, 16, 16.0 * 100};
  int shifted = 0;
  for (int i = 0; i < 8; ++i) shifted += balancer.Choose(s) ? 1 : 0;
  EXPECT_EQ(shifted, 4);
  // No timings (a failed step, or timings of stages it does not have):
  // nothing recorded, and it keeps alternating.
  balancer.Record(s, true, {});
  std::vector<transport::StageTiming> outside(1);
  outside[0].stage = 7;
  balancer.Record(s, false, outside);
  EXPECT_EQ(balancer.recorded(true) + balancer.recorded(false), 0);
  EXPECT_EQ(balancer.Predict(0, s, false), 0.0);
  EXPECT_EQ(balancer.Predict(9, s, false), 0.0);
}

TEST(BoundaryBalancerTest, StepShapeCountsRowsSamplesAndAttention) {
  transport::StepPlan plan;
  transport::PlanSequence prompt;
  prompt.num_tokens = 4;
  prompt.cached_tokens = 10;
  transport::PlanSequence decode;
  decode.num_tokens = 1;
  decode.cached_tokens = 20;
  decode.sample = true;
  transport::PlanSequence score;
  score.num_tokens = 3;
  score.prompt_logprobs = true;
  plan.sequences = {prompt, decode, score};
  const StepShape s = StepShape::Of(plan);
  EXPECT_EQ(s.rows, 8);
  EXPECT_EQ(s.sampled, 1 + 3);
  EXPECT_DOUBLE_EQ(s.attention, 4 * 12.5 + 1 * 21 + 3 * 2);
}

}  // namespace
}  // namespace strata::router
