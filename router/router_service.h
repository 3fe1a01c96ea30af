// The router's gRPC services: the public strata.v1.Inference API, the
// Fleet service workers register with, the standard grpc.health.v1.Health
// service (SERVING while a pipeline is up) and server reflection.
#ifndef STRATA_ROUTER_ROUTER_SERVICE_H_
#define STRATA_ROUTER_ROUTER_SERVICE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "router/engine.h"
#include "router/router_metrics.h"

namespace strata::router {

struct RouterOptions {
  std::string host = "127.0.0.1";
  int port = 0;            // public API and Fleet (gRPC)
  int metrics_port = -1;   // -1: off
  std::string model_name;  // label for metrics; the served model comes from the workers
  std::string tokenizer_dir;  // a folder with tokenizer.json or tokenizer.model; empty: token ids only
  EngineOptions engine;
  int max_message_bytes = 4 << 20;
};

class RouterServer {
 public:
  static absl::StatusOr<std::unique_ptr<RouterServer>> Start(const RouterOptions& options);
  ~RouterServer();

  std::string address() const;       // host:port of the gRPC services
  std::string data_address() const;  // where results arrive
  std::string metrics_address() const;
  Engine& engine() { return *engine_; }

  // SIGTERM: new requests get UNAVAILABLE, running ones finish within
  // `budget`, then the servers stop.
  void Drain(std::chrono::milliseconds budget);
  void Wait();

  struct Services;

 private:
  RouterServer() = default;
  RouterOptions options_;
  std::unique_ptr<RouterMetrics> metrics_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::thread health_thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_ROUTER_SERVICE_H_
