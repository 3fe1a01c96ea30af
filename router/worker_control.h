// The router's side of the workers' control plane, as a seam: heartbeats
// (Health of every member, concurrently, within a deadline) and aborts.
// GrpcWorkerControl does it with asynchronous gRPC calls on one completion
// queue per use (no thread per worker per beat); fleet and dispatcher tests
// put a fake in its place.
#ifndef STRATA_ROUTER_WORKER_CONTROL_H_
#define STRATA_ROUTER_WORKER_CONTROL_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "grpcpp/security/credentials.h"

namespace strata::router {

// What one heartbeat learned of a worker.
enum class Probe {
  kAlive,        // answered SERVING with its epoch
  kSilent,       // no answer within the deadline (hung, or busy), or not serving
  kDraining,     // answered DRAINING with its epoch: it finishes what it has and takes no more
  kGone,         // its address refuses connections, or another process (epoch) answers there
};

struct ProbeTarget {
  std::string control_address;
  uint64_t epoch = 0;  // the registration's: another epoch is a restarted worker
};

class WorkerControl {
 public:
  virtual ~WorkerControl() = default;
  // Calls Health on every target at once and says what each answered
  // within `timeout`. Blocks at most `timeout` (plus scheduling);
  // thread-compatible (one caller at a time).
  virtual std::vector<Probe> ProbeAll(const std::vector<ProbeTarget>& targets, std::chrono::milliseconds timeout) = 0;
  // Tells every worker at `control_addresses` to drop the steps it holds up
  // to `up_to_step_id`. Returns at once; the calls finish in the background
  // (bounded by a deadline). Thread-safe.
  virtual void AbortAll(const std::vector<std::string>& control_addresses, uint64_t up_to_step_id) = 0;
  // Gives every worker at `control_addresses` its pipeline's new data key
  // (Worker.SetDataKey, at once, within `timeout`); the first failure, or OK.
  virtual absl::Status SetDataKeyAll(const std::vector<std::string>& control_addresses, uint64_t key_id,
                                     const std::string& key, std::chrono::milliseconds timeout) = 0;
  // The process at `control_address` changed (a worker registered there
  // anew): drop what is kept for the old one (its channel, in reconnect
  // backoff since the old process died), so the next call connects afresh.
  // Thread-safe; no network I/O.
  virtual void Forget(const std::string& control_address) { (void)control_address; }
};

// Over gRPC, one channel per address, kept; with `credentials` (the
// control plane's mutual TLS), or plaintext when null.
std::unique_ptr<WorkerControl> MakeGrpcWorkerControl(std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

}  // namespace strata::router

#endif  // STRATA_ROUTER_WORKER_CONTROL_H_
