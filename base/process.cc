#include "base/process.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace strata::base {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kPoll(10);

// What the child reports through the exec pipe when it cannot start.
struct ChildError {
  int step;  // kStepNetns, kStepSysfs or kStepExec
  int error;
};
constexpr int kStepNetns = 1;
constexpr int kStepSysfs = 2;
constexpr int kStepExec = 3;

// Everything the child needs, built before fork: between fork and exec a
// child of a threaded parent may make only async-signal-safe calls, so no
// allocation happens there.
struct ExecPlan {
  std::vector<std::string> env;
  std::vector<char*> argv, envp;
};

ExecPlan MakePlan(const ProcessOptions& o) {
  ExecPlan p;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const auto& [k, v] : o.env) overridden = overridden || k == key;
    if (!overridden) p.env.push_back(entry);
  }
  for (const auto& [k, v] : o.env) p.env.push_back(absl::StrCat(k, "=", v));
  for (const std::string& a : o.argv) p.argv.push_back(const_cast<char*>(a.c_str()));
  p.argv.push_back(nullptr);
  for (const std::string& e : p.env) p.envp.push_back(const_cast<char*>(e.c_str()));
  p.envp.push_back(nullptr);
  return p;
}

[[noreturn]] void ChildFail(int err_fd, int step) {
  const ChildError e{step, errno};
  ssize_t unused = write(err_fd, &e, sizeof(e));
  (void)unused;
  _exit(127);
}

// In the child: joins the namespace and, as `ip netns exec` does, mounts
// the namespace's own sysfs in a private mount namespace, because programs
// list interfaces from /sys/class/net (UCX does) and would otherwise see
// the parent's.
void EnterNetns(int netns_fd, const char* name, int err_fd) {
  if (setns(netns_fd, CLONE_NEWNET) != 0) ChildFail(err_fd, kStepNetns);
  if (unshare(CLONE_NEWNS) != 0 || mount("", "/", "none", MS_SLAVE | MS_REC, nullptr) != 0) {
    ChildFail(err_fd, kStepSysfs);
  }
  struct statvfs sys;
  const unsigned long flags = statvfs("/sys", &sys) == 0 && (sys.f_flag & ST_RDONLY) ? MS_RDONLY : 0;
  umount2("/sys", MNT_DETACH);
  if (mount(name, "/sys", "sysfs", flags, nullptr) != 0) ChildFail(err_fd, kStepSysfs);
}

// In the child, after fork: async-signal-safe calls only.
[[noreturn]] void RunChild(const ExecPlan& plan, const ProcessOptions& o, pid_t parent, int log_fd, int netns_fd,
                           int err_fd) {
  if (o.parent_death_signal != 0) {
    prctl(PR_SET_PDEATHSIG, o.parent_death_signal);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
  }
  if (o.new_process_group) setpgid(0, 0);
  // The parent may block or ignore stop signals (base/signals.h); the
  // child starts from the defaults, as if run from a shell.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig : {SIGPIPE, SIGINT, SIGTERM}) sigaction(sig, &dfl, nullptr);
  if (netns_fd >= 0) EnterNetns(netns_fd, o.netns.c_str(), err_fd);
  if (log_fd >= 0) {
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
  }
  execve(plan.argv[0], plan.argv.data(), plan.envp.data());
  ChildFail(err_fd, kStepExec);
}

int StatusOf(int wait_status) {
  return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
}

}  // namespace

absl::StatusOr<Process> Process::Spawn(ProcessOptions o) {
  if (o.argv.empty() || o.argv[0].empty()) return absl::InvalidArgumentError("a process needs a program to run");
  int log_fd = -1, netns_fd = -1;
  if (!o.log.empty()) {
    log_fd = ::open(o.log.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (o.append_log ? O_APPEND : O_TRUNC), 0644);
    if (log_fd < 0) return absl::InvalidArgumentError(absl::StrCat("cannot open log ", o.log, ": ", strerror(errno)));
  }
  if (!o.netns.empty()) {
    netns_fd = ::open(absl::StrCat("/run/netns/", o.netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (netns_fd < 0) {
      const int err = errno;
      if (log_fd >= 0) ::close(log_fd);
      return absl::NotFoundError(absl::StrCat("network namespace ", o.netns, ": ", strerror(err)));
    }
  }
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    const int err = errno;
    for (int fd : {log_fd, netns_fd}) {
      if (fd >= 0) ::close(fd);
    }
    return absl::InternalError(absl::StrCat("pipe: ", strerror(err)));
  }
  const ExecPlan plan = MakePlan(o);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) RunChild(plan, o, parent, log_fd, netns_fd, pipe_fds[1]);
  const int fork_error = errno;
  ::close(pipe_fds[1]);
  for (int fd : {log_fd, netns_fd}) {
    if (fd >= 0) ::close(fd);
  }
  if (pid < 0) {
    ::close(pipe_fds[0]);
    return absl::InternalError(absl::StrCat("fork: ", strerror(fork_error)));
  }
  Process p;
  p.pid_ = pid;
  p.argv_ = std::move(o.argv);
  p.log_ = std::move(o.log);
  // The pipe closes on exec; anything read from it is why exec failed.
  ChildError e{};
  ssize_t n;
  while ((n = read(pipe_fds[0], &e, sizeof(e))) < 0 && errno == EINTR) {
  }
  ::close(pipe_fds[0]);
  if (n == static_cast<ssize_t>(sizeof(e))) {
    p.Reap(/*block=*/true);
    if (e.step == kStepNetns || e.step == kStepSysfs) {
      return absl::FailedPreconditionError(absl::StrCat("cannot enter network namespace ", o.netns,
                                                        e.step == kStepSysfs ? " (mounting its sysfs)" : "", ": ",
                                                        strerror(e.error)));
    }
    return absl::InvalidArgumentError(absl::StrCat("cannot run ", p.argv_[0], ": ", strerror(e.error)));
  }
  return p;
}

Process::Process(Process&& other) noexcept { *this = std::move(other); }

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      Reap(/*block=*/true);
    }
    pid_ = other.pid_;
    exit_status_ = other.exit_status_;
    argv_ = std::move(other.argv_);
    log_ = std::move(other.log_);
    other.pid_ = -1;
  }
  return *this;
}

Process::~Process() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    Reap(/*block=*/true);
  }
}

bool Process::Reap(bool block) {
  if (pid_ <= 0) return true;
  int status = 0;
  pid_t r;
  while ((r = waitpid(pid_, &status, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {
  }
  if (r == pid_) {
    exit_status_ = StatusOf(status);
  } else if (r < 0) {
    exit_status_ = -1;  // reaped elsewhere (ECHILD): the status is lost
  } else {
    return false;
  }
  pid_ = -1;
  return true;
}

bool Process::Running() { return !Reap(/*block=*/false); }

absl::StatusOr<int> Process::Wait(milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!Reap(/*block=*/false)) {
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(argv_[0], " (pid ", pid_, ") still runs after ", timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(kPoll);
  }
  return *exit_status_;
}

void Process::Signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

int Process::Stop(milliseconds grace) {
  StopAll({this}, grace);
  return exit_status_.value_or(-1);
}

void StopAll(const std::vector<Process*>& processes, milliseconds grace) {
  for (Process* p : processes) p->Signal(SIGTERM);
  const auto deadline = Clock::now() + grace;
  for (Process* p : processes) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (!p->Wait(std::max(left, milliseconds(0))).ok()) {
      p->Signal(SIGKILL);
      p->Wait(std::chrono::hours(1)).status().IgnoreError();  // SIGKILL cannot be refused
    }
  }
}

std::string LogTail(const std::string& path, size_t bytes) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

}  // namespace strata::base
