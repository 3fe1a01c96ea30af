// One child process: spawned with its arguments, a log file, extra
// environment and optionally inside a network namespace; stopped with
// SIGTERM and then SIGKILL after a grace period; waited for with a timeout.
// `strata up` and the cluster tests launch everything through it.
//
// No child outlives its owner: the destructor kills and reaps a child that
// is still running, and the child gets PR_SET_PDEATHSIG, so it is killed
// when the thread that spawned it dies, even by SIGKILL (note: the thread,
// not the process: spawn from a thread that lives as long as the children
// should).
//
// Not thread-safe: one thread owns a Process.
#ifndef STRATA_BASE_PROCESS_H_
#define STRATA_BASE_PROCESS_H_

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::base {

struct ProcessOptions {
  // argv[0] is the program's path (no PATH search).
  std::vector<std::string> argv;
  // stdout and stderr go to this file, truncated (appended to with
  // `append_log`, as a launcher restarting a child keeps the log of its
  // crash); empty: this process's.
  std::string log;
  bool append_log = false;
  // Set on top of this process's environment.
  std::vector<std::pair<std::string, std::string>> env;
  // A network namespace by name (/run/netns/NAME, as `ip netns add` makes
  // it), joined as `ip netns exec` does: with its own /sys mounted in a
  // private mount namespace. Empty: this process's. Needs CAP_SYS_ADMIN.
  std::string netns;
  // Its own process group, so a terminal's Ctrl-C reaches only the parent,
  // which stops its children in order.
  bool new_process_group = false;
  // Sent to the child when the spawning thread dies; 0: none.
  int parent_death_signal = SIGKILL;
};

class Process {
 public:
  // Fails (naming the program, log or namespace) when the child cannot be
  // started, including when exec fails.
  static absl::StatusOr<Process> Spawn(ProcessOptions options);

  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  // Kills (SIGKILL) and reaps the child if it is still running.
  ~Process();

  // The child's pid; -1 once it has been reaped.
  pid_t pid() const { return pid_; }
  const std::vector<std::string>& argv() const { return argv_; }
  const std::string& log() const { return log_; }

  // Reaps the child if it has exited; whether it is still running.
  bool Running();
  // Its exit status once reaped: the exit code, or 128 + the signal that
  // killed it.
  std::optional<int> exit_status() const { return exit_status_; }

  // Waits up to `timeout` for the child to exit: its exit status, or
  // DEADLINE_EXCEEDED while it still runs.
  absl::StatusOr<int> Wait(std::chrono::milliseconds timeout);
  // Sends `sig` if the child is still running (SIGSTOP and SIGCONT too).
  void Signal(int sig);
  // SIGTERM, then SIGKILL if it has not exited after `grace`; the exit
  // status.
  int Stop(std::chrono::milliseconds grace);

 private:
  Process() = default;
  // Reaps the child; `block`: wait for it.
  bool Reap(bool block);

  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::vector<std::string> argv_;
  std::string log_;
};

// Stops several children together: SIGTERM to all, one shared `grace`,
// then SIGKILL to those still running; all are reaped.
void StopAll(const std::vector<Process*>& processes, std::chrono::milliseconds grace);

// The last `bytes` of a file (a child's log, for an error message).
std::string LogTail(const std::string& path, size_t bytes = 2000);

}  // namespace strata::base

#endif  // STRATA_BASE_PROCESS_H_
