#include "router/pipeline_epoch.h"

#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace strata::router {
namespace {

uint64_t NowMicros() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

TEST(PipelineEpochTest, EpochsRiseAndStartFromTheClock) {
  const uint64_t before = NowMicros();
  const uint64_t a = NextPipelineEpoch();
  const uint64_t b = NextPipelineEpoch();
  EXPECT_GE(a, before);
  EXPECT_GT(b, a);
}

TEST(PipelineEpochTest, TheFloorIsOneForTheProcessAndBelowEveryLaterEpoch) {
  const uint64_t floor = PipelineEpochFloor();
  EXPECT_EQ(PipelineEpochFloor(), floor) << "a worker registering again must keep the epoch in use";
  EXPECT_GT(NextPipelineEpoch(), floor);
  EXPECT_GT(NextPipelineEpoch(), floor);
}

TEST(PipelineEpochTest, ThreadsNeverGetTheSameEpoch) {
  std::vector<std::vector<uint64_t>> got(4);
  std::vector<std::thread> threads;
  for (auto& g : got) {
    threads.emplace_back([&g] {
      for (int i = 0; i < 1000; ++i) g.push_back(NextPipelineEpoch());
    });
  }
  for (auto& t : threads) t.join();
  std::set<uint64_t> all;
  for (const auto& g : got) {
    for (size_t i = 1; i < g.size(); ++i) EXPECT_GT(g[i], g[i - 1]);
    all.insert(g.begin(), g.end());
  }
  EXPECT_EQ(all.size(), 4000u);
}

}  // namespace
}  // namespace strata::router
