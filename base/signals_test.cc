#include "base/signals.h"

#include <signal.h>
#include <unistd.h>

#include <future>

#include "gtest/gtest.h"

namespace strata::base {
namespace {

using std::chrono::milliseconds;

class SignalsTest : public ::testing::Test {
 protected:
  // Before any test thread starts, as a main would.
  static void SetUpTestSuite() { BlockStopSignals(); }
};

TEST_F(SignalsTest, IgnoresSigpipe) {
  struct sigaction sa;
  ASSERT_EQ(sigaction(SIGPIPE, nullptr, &sa), 0);
  EXPECT_EQ(sa.sa_handler, SIG_IGN);
}

TEST_F(SignalsTest, WaitTimesOutWithoutASignal) {
  EXPECT_EQ(WaitForStopSignal(milliseconds(50)), 0);
}

TEST_F(SignalsTest, WaitTakesEachStopSignal) {
  for (int sig : {SIGTERM, SIGINT}) {
    ASSERT_EQ(kill(getpid(), sig), 0);
    EXPECT_EQ(WaitForStopSignal(milliseconds(5000)), sig);
  }
}

TEST_F(SignalsTest, DrainRunsOnceOnTheFirstSignal) {
  std::promise<void> drained;
  int calls = 0;
  DrainOnStopSignal("signals_test", [&] {
    ++calls;
    drained.set_value();
  });
  ASSERT_EQ(kill(getpid(), SIGTERM), 0);
  ASSERT_EQ(drained.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(calls, 1);
  // The drain thread is gone: a second signal stays pending for others.
  ASSERT_EQ(kill(getpid(), SIGINT), 0);
  EXPECT_EQ(WaitForStopSignal(milliseconds(5000)), SIGINT);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace strata::base
