// One strata worker process: loads its shard, joins its TP group, opens the
// UCX data plane, serves the Worker control service and /metrics, registers
// with the router, and runs the steps that arrive, forwarding activations to
// the next stage or results to the router.
#ifndef STRATA_WORKER_WORKER_SERVER_H_
#define STRATA_WORKER_WORKER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/worker_options.h"

namespace strata::worker {

class WorkerServer {
 public:
  // Loads and starts everything; errors name what failed (bad flags,
  // checkpoint, TP group, ports). Returns once the worker serves steps.
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Start(const WorkerOptions& options);
  ~WorkerServer();

  std::string data_address() const;
  std::string control_address() const;
  std::string metrics_address() const;  // empty when off
  uint64_t epoch() const;
  int64_t kv_blocks() const;

  // Stops taking new work, runs what has arrived until the data plane is
  // quiet for `quiet_ms` (or `budget_ms` passes), then stops.
  void Drain(int quiet_ms, int budget_ms);
  // Blocks until Drain or Shutdown finished.
  void Wait();
  void Shutdown();

  struct State;

 private:
  explicit WorkerServer(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_WORKER_SERVER_H_
