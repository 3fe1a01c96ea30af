#include "router/step_watchdog.h"

#include <vector>

#include "gtest/gtest.h"

namespace strata::router {
namespace {

using std::chrono::milliseconds;

struct Case {
  const char* what;
  std::vector<std::pair<int64_t, double>> seen;  // rows, seconds
  int64_t rows;
  int64_t want_ms;
};

TEST(StepWatchdogTest, DeadlinesFollowTheStepsSeen) {
  const std::vector<Case> cases = {
      {"no history: the step timeout", {}, 1, 30000},
      {"a decode step after decode steps", {{1, 0.010}, {1, 0.020}, {1, 0.015}}, 1, 2000 + 160},
      {"a batch of 4 after single rows: scaled by rows", {{1, 0.020}}, 4, 2000 + 640},
      {"a decode step is not judged by prefill chunks", {{1, 0.010}, {512, 5.0}}, 1, 2000 + 80},
      {"a chunk larger than any seen: by cost per row", {{16, 0.1}, {1, 0.010}}, 64, 2000 + 5120},
      {"capped at the step timeout", {{1, 1.0}}, 512, 30000},
      {"nothing smaller seen: the step timeout", {{64, 0.5}}, 16, 30000},
  };
  for (const Case& c : cases) {
    StepWatchdog w(StepWatchdogOptions{});
    for (const auto& [rows, secs] : c.seen) w.Record(rows, secs);
    EXPECT_EQ(w.Deadline(c.rows).count(), c.want_ms) << c.what;
  }
}

TEST(StepWatchdogTest, OnlyTheRecentStepsCount) {
  StepWatchdogOptions o;
  o.history = 4;
  StepWatchdog w(o);
  w.Record(1, 2.0);  // one slow step, long ago
  for (int i = 0; i < 4; ++i) w.Record(1, 0.010);
  EXPECT_EQ(w.Deadline(1), milliseconds(2080));
  w.Clear();
  EXPECT_EQ(w.Deadline(1), milliseconds(30000));
}

TEST(StepWatchdogTest, BadSamplesAreIgnored) {
  StepWatchdog w(StepWatchdogOptions{});
  w.Record(0, 0.5);
  w.Record(1, -1.0);
  w.Record(1, 1.0 / 0.0);
  EXPECT_EQ(w.Deadline(1), milliseconds(30000));
}

}  // namespace
}  // namespace strata::router
