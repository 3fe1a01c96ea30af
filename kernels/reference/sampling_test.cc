#include "kernels/reference/sampling.h"

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace strata::kernels::reference {
namespace {

TEST(ReferenceSamplingTest, GreedyPicksLowestIdOfTheMaximum) {
  std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f};
  SamplingParams greedy;
  EXPECT_EQ(Sample(logits.data(), 4, greedy), 1);
  SamplingParams k1;
  k1.temperature = 1.0f;
  k1.top_k = 1;
  EXPECT_EQ(Sample(logits.data(), 4, k1), 1);
}

TEST(ReferenceSamplingTest, SameSeedAndStepSameToken) {
  std::vector<float> logits(1000);
  for (int i = 0; i < 1000; ++i) logits[i] = std::sin(i * 0.37f) * 2.0f;
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 50; ++step) {
    p.step = step;
    const int32_t a = Sample(logits.data(), 1000, p);
    EXPECT_EQ(a, Sample(logits.data(), 1000, p));
    seen.insert(a);
  }
  EXPECT_GT(seen.size(), 10u) << "the draw must change with the step";
}

TEST(ReferenceSamplingTest, FrequenciesFollowTheSoftmax) {
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};
  SamplingParams p;
  p.temperature = 1.0f;
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    p.seed = 7;
    p.step = i;
    ++counts[Sample(logits.data(), 4, p)];
  }
  for (int id = 0; id < 4; ++id) {
    EXPECT_NEAR(counts[id] / double(n), (id + 1) / 10.0, 0.015) << "token " << id;
  }
}

TEST(ReferenceSamplingTest, TopKAndTopPRestrictTheSet) {
  // Probabilities 0.4, 0.3, 0.2, 0.1 (in scrambled id order).
  const std::vector<float> logits = {std::log(0.2f), std::log(0.4f), std::log(0.1f), std::log(0.3f)};
  SamplingParams p;
  p.temperature = 1.0f;
  std::set<int32_t> top2, top_p;
  for (int i = 0; i < 2000; ++i) {
    p.step = i;
    p.top_k = 2;
    p.top_p = 1.0f;
    top2.insert(Sample(logits.data(), 4, p));
    p.top_k = 0;
    p.top_p = 0.65f;  // 0.4 + 0.3 reaches it
    top_p.insert(Sample(logits.data(), 4, p));
  }
  EXPECT_EQ(top2, (std::set<int32_t>{1, 3}));
  EXPECT_EQ(top_p, (std::set<int32_t>{1, 3}));
}

TEST(ReferenceSamplingTest, TiesAtTheTopKEdgeAreKept) {
  const std::vector<float> logits = {1.0f, 2.0f, 2.0f, 0.0f};
  SamplingParams p;
  p.temperature = 1.0f;
  std::set<int32_t> seen;
  p.top_k = 2;
  for (int i = 0; i < 500; ++i) {
    p.step = i;
    seen.insert(Sample(logits.data(), 4, p));
  }
  EXPECT_EQ(seen, (std::set<int32_t>{1, 2}));
}

TEST(ReferenceSamplingTest, UniformIsInUnitInterval) {
  for (uint64_t s = 0; s < 10000; ++s) {
    const float u = SampleUniform(s * 31, s);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
  }
}

}  // namespace
}  // namespace strata::kernels::reference
