// GoneWatch: a watched call's wake runs once, soon after its predicate says
// gone, and never after its handle is reset; RequestStream::Interrupt ends
// a waiting Next at once, or the next one when none waits.
#include "router/gone_watch.h"

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "router/request_stream.h"

namespace strata::router {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Waits (bounded) until `done` holds.
template <typename F>
bool Eventually(F done, milliseconds limit = milliseconds(10000)) {
  const auto until = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

TEST(GoneWatchTest, WakesOnceWhenTheCallerGoes) {
  GoneWatch watch(milliseconds(5));
  std::atomic<bool> gone{false};
  std::atomic<int> asked{0}, wakes{0};
  GoneWatch::Handle h = watch.Watch(
      [&] {
        asked++;
        return gone.load();
      },
      [&] { wakes++; });
  ASSERT_TRUE(Eventually([&] { return asked.load() >= 3; }));
  EXPECT_EQ(wakes.load(), 0);
  gone = true;
  ASSERT_TRUE(Eventually([&] { return wakes.load() == 1; }));
  const int asked_then = asked.load();
  std::this_thread::sleep_for(milliseconds(30));
  EXPECT_EQ(wakes.load(), 1);  // once
  EXPECT_EQ(asked.load(), asked_then);  // and not asked again
}

TEST(GoneWatchTest, NothingRunsOnceItsHandleIsReset) {
  GoneWatch watch(milliseconds(1));
  std::atomic<bool> inside{false};
  std::atomic<int> asked{0};
  GoneWatch::Handle h = watch.Watch(
      [&] {
        inside = true;
        std::this_thread::sleep_for(milliseconds(2));  // widen the window a reset can fall in
        asked++;
        inside = false;
        return false;
      },
      [] {});
  ASSERT_TRUE(Eventually([&] { return asked.load() >= 2; }));
  h.Reset();
  EXPECT_FALSE(inside.load());
  const int asked_then = asked.load();
  std::this_thread::sleep_for(milliseconds(20));
  EXPECT_EQ(asked.load(), asked_then);
  EXPECT_FALSE(h.active());
  EXPECT_EQ(watch.watched(), 0);
}

TEST(GoneWatchTest, HandlesMoveAndEndWithTheirOwner) {
  GoneWatch watch;
  {
    GoneWatch::Handle a = watch.Watch([] { return false; }, [] {});
    GoneWatch::Handle b = watch.Watch([] { return false; }, [] {});
    EXPECT_EQ(watch.watched(), 2);
    GoneWatch::Handle c = std::move(a);
    EXPECT_FALSE(a.active());
    EXPECT_TRUE(c.active());
    EXPECT_EQ(watch.watched(), 2);
    b = std::move(c);  // b's own registration ends, c's moves in
    EXPECT_EQ(watch.watched(), 1);
  }
  EXPECT_EQ(watch.watched(), 0);
}

// With more calls than a period's asks, the calls take turns: each is asked
// every ceil(calls / asks) periods, none is left out, and a woken call
// takes no turn; a call that goes is still woken.
TEST(GoneWatchTest, AsksAtMostItsBudgetAPeriodInTurn) {
  constexpr milliseconds kPeriod(20);
  GoneWatch watch(kPeriod, 2);
  EXPECT_EQ(watch.asks_per_period(), 2);
  constexpr int kCalls = 6;
  std::mutex mu;
  std::vector<std::vector<Clock::time_point>> asked(kCalls + 1);
  std::atomic<bool> gone{false};
  std::atomic<int> wakes{0};
  std::vector<GoneWatch::Handle> handles;
  // Call 0 goes at once: woken in the first period, then it takes no turn.
  handles.push_back(watch.Watch(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        asked[0].push_back(Clock::now());
        return true;
      },
      [&] { wakes++; }));
  for (int i = 1; i <= kCalls; ++i) {
    handles.push_back(watch.Watch(
        [&, i] {
          std::lock_guard<std::mutex> lock(mu);
          asked[i].push_back(Clock::now());
          return i == kCalls && gone.load();
        },
        [&] { wakes++; }));
  }
  const Clock::time_point all_watched = Clock::now();
  auto times = [&](int i) {
    std::lock_guard<std::mutex> lock(mu);
    return asked[i];
  };
  ASSERT_TRUE(Eventually([&] {
    for (int i = 1; i <= kCalls; ++i) {
      if (times(i).size() < 3) return false;
    }
    return true;
  }));
  EXPECT_EQ(times(0).size(), 1u);
  EXPECT_EQ(wakes.load(), 1);
  // 6 calls at 2 a period: once all are watched, each waits 3 periods
  // (each at least kPeriod) between asks.
  for (int i = 1; i <= kCalls; ++i) {
    const std::vector<Clock::time_point> t = times(i);
    for (size_t k = 1; k < t.size(); ++k) {
      if (t[k - 1] < all_watched) continue;
      EXPECT_GE(t[k] - t[k - 1], 3 * kPeriod - milliseconds(1)) << "call " << i << ", ask " << k;
    }
  }
  gone = true;
  ASSERT_TRUE(Eventually([&] { return wakes.load() == 2; }));
}

TEST(GoneWatchTest, AWatchWithNothingToWatchStopsAtOnce) {
  const auto start = Clock::now();
  { GoneWatch watch(std::chrono::hours(1)); }
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));  // joined, not waiting out the period
}

TEST(RequestStreamTest, InterruptEndsAWaitingNext) {
  RequestStream stream;
  auto waiting = std::async(std::launch::async, [&] { return stream.Next(std::chrono::hours(1)); });
  std::this_thread::sleep_for(milliseconds(10));
  stream.Interrupt();
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  RequestStream::Event e = waiting.get();
  EXPECT_TRUE(e.tokens.empty());
  EXPECT_FALSE(e.finished);
}

TEST(RequestStreamTest, AnInterruptBeforeNextIsKeptOnceAndTokensStillCome) {
  RequestStream stream;
  stream.Interrupt();
  auto first = std::async(std::launch::async, [&] { return stream.Next(std::chrono::hours(1)); });
  ASSERT_EQ(first.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(first.get().tokens.empty());
  // Consumed: the next Next waits for its timeout again.
  const auto start = Clock::now();
  EXPECT_TRUE(stream.Next(milliseconds(30)).tokens.empty());
  EXPECT_GE(Clock::now() - start, milliseconds(30));
  TokenOut t;
  t.id = 5;
  stream.Token(t);
  stream.Interrupt();
  RequestStream::Event e = stream.Next(milliseconds(10));
  ASSERT_EQ(e.tokens.size(), 1u);
  EXPECT_EQ(e.tokens[0].id, 5);
}

}  // namespace
}  // namespace strata::router
