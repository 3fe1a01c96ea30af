#include "base/process.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace strata::base {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

std::string TempPath(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name, "_", getpid());
}

Process Sh(const std::string& script, const std::string& log = "") {
  ProcessOptions o;
  o.argv = {"/bin/sh", "-c", script};
  o.log = log;
  auto p = Process::Spawn(o);
  EXPECT_TRUE(p.ok()) << p.status();
  return std::move(*p);
}

TEST(ProcessTest, ExitStatuses) {
  const struct {
    std::string script;
    int status;
  } cases[] = {
      {"exit 0", 0},
      {"exit 3", 3},
      {"exit 255", 255},
      {"kill -TERM $$", 128 + SIGTERM},
      {"kill -KILL $$", 128 + SIGKILL},
  };
  for (const auto& c : cases) {
    Process p = Sh(c.script);
    auto status = p.Wait(milliseconds(10000));
    ASSERT_TRUE(status.ok()) << c.script << ": " << status.status();
    EXPECT_EQ(*status, c.status) << c.script;
    EXPECT_EQ(p.exit_status(), c.status);
    EXPECT_EQ(p.pid(), -1);
    EXPECT_FALSE(p.Running());
  }
}

TEST(ProcessTest, LogCapturesStdoutAndStderrAndEnvironmentIsAdded) {
  const std::string log = TempPath("log");
  ProcessOptions o;
  o.argv = {"/bin/sh", "-c", "echo out $STRATA_A; echo err $STRATA_B >&2; echo path ${PATH:+kept}"};
  o.log = log;
  o.env = {{"STRATA_A", "one"}, {"STRATA_B", "two"}};
  auto p = Process::Spawn(o);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p->Wait(milliseconds(10000)), 0);
  EXPECT_EQ(LogTail(log), "out one\nerr two\npath kept\n");
  EXPECT_EQ(LogTail(log, 9), "ath kept\n");
  EXPECT_EQ(p->log(), log);
}

TEST(ProcessTest, AppendLogKeepsWhatTheLogHeld) {
  const std::string log = TempPath("append_log");
  for (const char* word : {"first", "second"}) {
    ProcessOptions o;
    o.argv = {"/bin/sh", "-c", std::string("echo ") + word};
    o.log = log;
    o.append_log = std::string(word) == "second";
    auto p = Process::Spawn(o);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(*p->Wait(milliseconds(10000)), 0);
  }
  EXPECT_EQ(LogTail(log), "first\nsecond\n");
}

TEST(ProcessTest, WaitTimesOutWhileItRuns) {
  Process p = Sh("exec /bin/sleep 30");
  const pid_t pid = p.pid();
  auto status = p.Wait(milliseconds(100));
  EXPECT_EQ(status.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(p.Running());
  EXPECT_EQ(p.pid(), pid);
}

TEST(ProcessTest, StopSendsSigtermFirst) {
  Process p = Sh("exec /bin/sleep 30");
  const auto start = Clock::now();
  EXPECT_EQ(p.Stop(milliseconds(5000)), 128 + SIGTERM);
  EXPECT_LT(Clock::now() - start, milliseconds(4000));
}

TEST(ProcessTest, StopEscalatesToSigkillAfterTheGrace) {
  // The shell ignores SIGTERM, and exec keeps it ignored in sleep.
  Process p = Sh("trap '' TERM; exec /bin/sleep 30");
  std::this_thread::sleep_for(milliseconds(200));  // the trap is set
  const auto start = Clock::now();
  EXPECT_EQ(p.Stop(milliseconds(300)), 128 + SIGKILL);
  EXPECT_GE(Clock::now() - start, milliseconds(300));
  EXPECT_LT(Clock::now() - start, milliseconds(5000));
}

TEST(ProcessTest, StopAllSharesOneGrace) {
  Process a = Sh("trap '' TERM; exec /bin/sleep 30");
  Process b = Sh("exec /bin/sleep 30");
  std::this_thread::sleep_for(milliseconds(200));
  StopAll({&a, &b}, milliseconds(300));
  EXPECT_EQ(a.exit_status(), 128 + SIGKILL);
  EXPECT_EQ(b.exit_status(), 128 + SIGTERM);
}

TEST(ProcessTest, TheChildStartsWithDefaultSignals) {
  // A parent that blocks SIGTERM (base/signals.h) must not pass that on.
  sigset_t term, old;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, &old);
  Process p = Sh("exec /bin/sleep 30");
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  EXPECT_EQ(p.Stop(milliseconds(5000)), 128 + SIGTERM);
}

TEST(ProcessTest, TheDestructorKillsAndReaps) {
  pid_t pid;
  {
    Process p = Sh("exec /bin/sleep 30");
    pid = p.pid();
    ASSERT_GT(pid, 0);
    Process moved = std::move(p);
    EXPECT_EQ(p.pid(), -1);
    EXPECT_EQ(moved.pid(), pid);
  }
  EXPECT_NE(kill(pid, 0), 0);  // gone, not a zombie
}

TEST(ProcessTest, TheChildDiesWithTheThreadThatSpawnedIt) {
  std::optional<Process> child;
  std::thread([&] { child.emplace(Sh("exec /bin/sleep 30")); }).join();
  auto status = child->Wait(milliseconds(10000));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, 128 + SIGKILL);
}

TEST(ProcessTest, StartFailuresNameTheCause) {
  ProcessOptions o;
  EXPECT_EQ(Process::Spawn(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.argv = {"/nonexistent/program", "x"};
  auto missing = Process::Spawn(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "cannot run /nonexistent/program: No such file or directory");
  o.argv = {"/bin/true"};
  o.log = "/nonexistent/dir/log";
  EXPECT_NE(Process::Spawn(o).status().message().find("cannot open log /nonexistent/dir/log"), std::string::npos);
  o.log = "";
  o.netns = "strata-no-such-namespace";
  auto ns = Process::Spawn(o);
  EXPECT_EQ(ns.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(ns.status().message().find("strata-no-such-namespace"), std::string::npos);
}

// Inside a fresh network namespace only loopback exists. Root only.
TEST(ProcessTest, RunsInsideANetworkNamespace) {
  if (geteuid() != 0 || access("/usr/sbin/ip", X_OK) != 0) GTEST_SKIP() << "needs root and iproute2";
  const std::string ns = absl::StrCat("strata_process_test_", getpid());
  if (std::system(absl::StrCat("/usr/sbin/ip netns add ", ns, " 2>/dev/null").c_str()) != 0) {
    GTEST_SKIP() << "cannot create a network namespace here";
  }
  const std::string log = TempPath("netns");
  ProcessOptions o;
  o.argv = {"/bin/sh", "-c", "grep -c : /proc/net/dev; ls /sys/class/net"};
  o.log = log;
  o.netns = ns;
  auto p = Process::Spawn(o);
  const int waited = p.ok() ? p->Wait(milliseconds(10000)).value_or(-1) : -1;
  const int deleted = std::system(absl::StrCat("/usr/sbin/ip netns delete ", ns).c_str());
  EXPECT_EQ(deleted, 0);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(waited, 0);
  EXPECT_EQ(LogTail(log), "1\nlo\n");  // its own interfaces, in /proc and in /sys
}

}  // namespace
}  // namespace strata::base
