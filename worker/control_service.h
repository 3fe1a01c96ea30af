// A worker's control plane (strata.v1.Worker): Health (state and epoch, the
// router's heartbeat), Stats (read from the worker's metrics, the one record
// of what it did), Drain (stop taking work) and Abort (steps the data loop
// must drop). Thread-safe: gRPC calls it from its own threads.
#ifndef STRATA_WORKER_CONTROL_SERVICE_H_
#define STRATA_WORKER_CONTROL_SERVICE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>

#include "strata/v1/worker.grpc.pb.h"
#include "worker/abort_list.h"
#include "worker/worker_metrics.h"

namespace strata::worker {

class ControlService : public v1::Worker::Service {
 public:
  using State = v1::HealthResponse::State;
  // What Stats reports beside the metrics.
  struct Facts {
    v1::WorkerIdentity identity;
    uint64_t epoch = 0;
    int64_t kv_blocks = 0;
    uint64_t weight_bytes = 0;
  };
  // `aborts` and `metrics` must outlive the service.
  ControlService(Facts facts, AbortList* aborts, WorkerMetrics* metrics)
      : facts_(std::move(facts)), aborts_(aborts), metrics_(metrics) {}
  // Called on every Abort (the router took the pipeline down).
  void set_on_abort(std::function<void()> on_abort) { on_abort_ = std::move(on_abort); }
  // Called with every valid SetDataKey (id, 32 key bytes); unset: the call
  // is FAILED_PRECONDITION (this worker's data plane is not signed).
  void set_on_data_key(std::function<void(uint64_t, const std::string&)> on_data_key) {
    on_data_key_ = std::move(on_data_key);
  }

  // Called with each state set (set_state or a Drain call), in the order
  // they are set: the worker mirrors it into grpc.health.v1 for probes.
  // Set before the service is registered.
  void set_on_state_change(std::function<void(State)> on_state) { on_state_ = std::move(on_state); }

  void set_state(State state);
  State state() const { return state_.load(); }
  // When a Health call (the router's heartbeat) last came.
  std::chrono::steady_clock::time_point last_health_call() const { return last_health_.load(); }

  grpc::Status Health(grpc::ServerContext*, const v1::HealthRequest*, v1::HealthResponse* r) override;
  grpc::Status Stats(grpc::ServerContext*, const v1::StatsRequest*, v1::StatsResponse* r) override;
  grpc::Status Drain(grpc::ServerContext*, const v1::DrainRequest*, v1::DrainResponse* r) override;
  grpc::Status Abort(grpc::ServerContext*, const v1::AbortRequest* req, v1::AbortResponse* r) override;
  grpc::Status SetDataKey(grpc::ServerContext*, const v1::SetDataKeyRequest* req, v1::SetDataKeyResponse*) override;

 private:
  const Facts facts_;
  AbortList* aborts_;
  WorkerMetrics* metrics_;
  std::function<void()> on_abort_;
  std::function<void(State)> on_state_;
  std::mutex state_mu_;  // orders set_state's write and its on_state_ call
  std::function<void(uint64_t, const std::string&)> on_data_key_;
  std::atomic<State> state_{v1::HealthResponse::LOADING};
  std::atomic<std::chrono::steady_clock::time_point> last_health_{std::chrono::steady_clock::now()};
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_CONTROL_SERVICE_H_
