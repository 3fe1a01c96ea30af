// One strata worker process, wired from its parts: its place in the world
// (model::StagePlace), the checkpoint slice and backend (StageExecutor), its
// tensor-parallel group (TpGroup), the KV pool, the data plane (DataLoop
// over UCX), the control service (ControlService), /metrics, the probes'
// grpc.health.v1 port, and the registration with the router
// (Registration). Start returns once the worker serves steps.
#ifndef STRATA_WORKER_WORKER_SERVER_H_
#define STRATA_WORKER_WORKER_SERVER_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "worker/worker_options.h"

namespace strata::worker {

class WorkerServer {
 public:
  // Loads and starts everything; errors name what failed (bad flags,
  // checkpoint, TP group, ports).
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Start(const WorkerOptions& options);
  ~WorkerServer();

  std::string data_address() const;
  std::string control_address() const;
  std::string metrics_address() const;  // empty when off
  // The plaintext grpc.health.v1 service for probes (--health-port): SERVING
  // while the control state is SERVING, NOT_SERVING while loading, draining
  // or failed. Empty when off.
  std::string health_address() const;

  uint64_t epoch() const;
  int64_t kv_blocks() const;

  // Stops taking new work, runs what has arrived until the data plane is
  // quiet for `quiet_ms` (or `budget_ms` passes), then stops.
  void Drain(int quiet_ms, int budget_ms);
  // Blocks until Drain or Shutdown finished.
  void Wait();
  void Shutdown();

  struct Parts;  // what the server owns, in the order it starts them

 private:
  explicit WorkerServer(std::unique_ptr<Parts> parts);
  absl::Status WriteReadyFile() const;

  std::unique_ptr<Parts> p_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool finished_ = false;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_WORKER_SERVER_H_
