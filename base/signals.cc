#include "base/signals.h"

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <thread>

namespace strata::base {
namespace {

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockStopSignals() {
  sigset_t set = StopSignals();
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int WaitForStopSignal(std::chrono::milliseconds timeout) {
  const sigset_t set = StopSignals();
  const auto ms = timeout.count() < 0 ? 0 : timeout.count();
  timespec ts{static_cast<time_t>(ms / 1000), static_cast<long>(ms % 1000) * 1000000L};
  siginfo_t info;
  const int sig = sigtimedwait(&set, &info, &ts);
  return sig > 0 ? sig : 0;
}

void DrainOnStopSignal(const std::string& program, std::function<void()> drain) {
  std::thread([program, drain = std::move(drain)] {
    const sigset_t set = StopSignals();
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    std::fprintf(stderr, "%s: signal %d, draining\n", program.c_str(), sig);
    std::fflush(stderr);
    drain();
  }).detach();
}

void ReloadOnHangup(const std::string& program, std::function<void()> reload) {
  std::thread([program, reload = std::move(reload)] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      std::fprintf(stderr, "%s: SIGHUP, reloading\n", program.c_str());
      std::fflush(stderr);
      reload();
    }
  }).detach();
}

}  // namespace strata::base
