// strata-worker: one TP rank of one pipeline stage (see worker_options.h for
// the flags). SIGTERM or SIGINT drains: steps already sent to this worker
// run, then it exits 0.
#include <csignal>
#include <iostream>
#include <thread>

#include "worker/worker_options.h"
#include "worker/worker_server.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << strata::worker::WorkerUsage();
    return 0;
  }
  auto options = strata::worker::ParseWorkerOptions(args);
  if (!options.ok()) {
    std::cerr << "strata-worker: " << options.status().message() << "\n" << strata::worker::WorkerUsage();
    return 2;
  }
  // Block the stop signals in every thread; one thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto server = strata::worker::WorkerServer::Start(*options);
  if (!server.ok()) {
    std::cerr << "strata-worker: " << server.status() << "\n";
    return 1;
  }
  std::thread signals([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::cerr << "strata-worker: signal " << sig << ", draining\n";
    (*server)->Drain(/*quiet_ms=*/500, /*budget_ms=*/30000);
  });
  signals.detach();
  (*server)->Wait();
  return 0;
}
