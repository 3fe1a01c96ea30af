// strata-worker: one TP rank of one pipeline stage (`--help` prints the
// flags from worker_options.cc's table). SIGTERM or SIGINT drains: steps
// already sent to this worker run, then it exits 0.
#include <iostream>

#include "base/signals.h"
#include "worker/worker_options.h"
#include "worker/worker_server.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (strata::base::WantsHelp(args)) {
    std::cout << strata::worker::WorkerUsage();
    return 0;
  }
  auto options = strata::worker::ParseWorkerOptions(args);
  if (!options.ok()) {
    std::cerr << "strata-worker: " << options.status().message() << " (strata-worker --help lists the flags)\n";
    return 2;
  }
  strata::base::BlockStopSignals();

  auto server = strata::worker::WorkerServer::Start(*options);
  if (!server.ok()) {
    std::cerr << "strata-worker: " << server.status() << "\n";
    return 1;
  }
  strata::base::DrainOnStopSignal("strata-worker", [&] { (*server)->Drain(/*quiet_ms=*/500, /*budget_ms=*/30000); });
  (*server)->Wait();
  return 0;
}
