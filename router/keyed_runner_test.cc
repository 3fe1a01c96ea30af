// KeyedRunner: one key's tasks run in order and never at once; a key whose
// task blocks does not hold up another key's.
#include "router/keyed_runner.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <vector>

#include "gtest/gtest.h"

namespace strata::router {
namespace {

using std::chrono::milliseconds;

bool WaitFor(const std::function<bool()>& done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

TEST(KeyedRunnerTest, OneKeyInOrderOthersBesideABlockedOne) {
  KeyedRunner runner(4);
  std::atomic<bool> release{false};
  std::atomic<int> blocked_ran{0};
  runner.Post("black-hole", [&] {
    while (!release) std::this_thread::sleep_for(milliseconds(1));
    blocked_ran++;
  });
  runner.Post("black-hole", [&] { blocked_ran++; });  // after the first, not beside it
  std::mutex mu;
  std::vector<int> order;
  std::atomic<int> at_once{0}, most_at_once{0};
  for (int i = 0; i < 20; ++i) {
    runner.Post("p0", [&, i] {
      const int now = ++at_once;
      most_at_once = std::max(most_at_once.load(), now);
      {
        std::lock_guard<std::mutex> lock(mu);
        order.push_back(i);
      }
      at_once--;
    });
  }
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return order.size() == 20;
  })) << "p0's tasks waited behind the blocked key";
  for (int i = 0; i < 20; ++i) EXPECT_EQ(order[i], i);
  EXPECT_EQ(most_at_once.load(), 1);
  EXPECT_EQ(blocked_ran.load(), 0);
  EXPECT_EQ(runner.pending(), 2);
  release = true;
  ASSERT_TRUE(WaitFor([&] { return blocked_ran == 2 && runner.pending() == 0; }));
}

TEST(KeyedRunnerTest, AtMostMaxThreadsAtOnceAndTheRestWait) {
  KeyedRunner runner(2);
  std::atomic<int> at_once{0}, most{0}, done{0};
  for (int i = 0; i < 8; ++i) {
    runner.Post("k" + std::to_string(i), [&] {
      const int now = ++at_once;
      most = std::max(most.load(), now);
      std::this_thread::sleep_for(milliseconds(5));
      at_once--;
      done++;
    });
  }
  ASSERT_TRUE(WaitFor([&] { return done == 8; }));
  EXPECT_LE(most.load(), 2);
}

// Keys posted in a burst onto threads that are idle each get a thread,
// though every task blocks: none waits for another's (a thread woken for
// one key is not counted idle for the next).
TEST(KeyedRunnerTest, ABurstOfBlockingKeysGetsAThreadEach) {
  KeyedRunner runner(64);
  std::atomic<bool> release{false};
  std::atomic<int> started{0};
  runner.Post("warm", [] {});
  ASSERT_TRUE(WaitFor([&] { return runner.pending() == 0; }));  // one idle thread
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 20; ++i) {
      runner.Post(std::to_string(round) + "-" + std::to_string(i), [&] {
        started++;
        while (!release) std::this_thread::sleep_for(milliseconds(1));
      });
    }
    if (round == 0) {
      ASSERT_TRUE(WaitFor([&] { return started == 20; }));
      release = true;
      ASSERT_TRUE(WaitFor([&] { return runner.pending() == 0; }));  // twenty idle threads
      release = false;
    }
  }
  ASSERT_TRUE(WaitFor([&] { return started == 40; })) << started.load() << " of 40 started";
  release = true;
}

}  // namespace
}  // namespace strata::router
