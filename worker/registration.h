// A worker joins its router's fleet: Fleet.Register with its identity (its
// StagePlace), the model's shape, its addresses, KV capacity and epoch,
// retried until the router answers. The router's answer names where results
// go. Then it watches the router's heartbeats: when none came for
// `reregister_after` (the router restarted and lost its fleet), it
// registers again with the same epoch. Runs on a thread of its own so a
// router that is not up yet never delays serving.
#ifndef STRATA_WORKER_REGISTRATION_H_
#define STRATA_WORKER_REGISTRATION_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "model/config.h"
#include "model/stage_place.h"
#include "grpcpp/security/credentials.h"
#include "strata/v1/worker.grpc.pb.h"

namespace strata::worker {

// The identity a worker at `place` reports; `movable_boundaries`: it holds
// the MLP beside each of its boundaries with another stage (StageSpec).
v1::WorkerIdentity IdentityOf(const std::string& pipeline, const model::StagePlace& place,
                              bool movable_boundaries = false);
// The model's shape as the router compares it across workers.
v1::ModelShape ShapeOf(const model::LlamaConfig& config);

class Registration {
 public:
  // Outcome callbacks run on the registration thread: `accepted` with the
  // router's answer (its result address, the data key), `refused` with its reason (a misfit the worker
  // cannot fix by retrying).
  // `last_heartbeat` tells when the router last called Health.
  Registration(std::string router, v1::RegisterRequest request, std::string log_prefix,
               std::function<void(const v1::RegisterResponse& response)> accepted,
               std::function<void(const std::string& why)> refused,
               std::function<std::chrono::steady_clock::time_point()> last_heartbeat,
               std::chrono::milliseconds reregister_after,
               std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);  // null: plaintext
  // How many times the router accepted this worker (tests, logs).
  int registrations() const { return registrations_.load(); }
  ~Registration();  // stops retrying and joins

 private:
  void Run();
  // Registers until accepted (true), refused or stopped (false).
  bool RegisterOnce(v1::Fleet::Stub* stub);

  const std::string router_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  const v1::RegisterRequest request_;
  const std::string log_prefix_;
  std::function<void(const v1::RegisterResponse&)> accepted_;
  std::function<void(const std::string&)> refused_;
  std::function<std::chrono::steady_clock::time_point()> last_heartbeat_;
  const std::chrono::milliseconds reregister_after_;
  std::atomic<int> registrations_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_REGISTRATION_H_
