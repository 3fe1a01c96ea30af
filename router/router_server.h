// One strata-router process: the metrics endpoint, the data plane (UCX),
// the dispatcher with its fleet, the public gRPC server (the
// strata.v1.Inference API, the standard grpc.health.v1.Health service,
// SERVING while a pipeline is up, and server reflection), and, on a port of
// its own, the Fleet service workers register with (the public port never
// serves it: a caller of the API cannot join the fleet).
#ifndef STRATA_ROUTER_ROUTER_SERVER_H_
#define STRATA_ROUTER_ROUTER_SERVER_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "base/tls.h"
#include "grpcpp/grpcpp.h"
#include "router/caller_auth.h"
#include "router/dispatcher.h"
#include "router/fleet_service.h"
#include "router/http_gateway.h"
#include "router/inference_service.h"
#include "router/request_intake.h"
#include "router/router_metrics.h"

namespace strata::router {

struct RouterOptions {
  std::string host = "127.0.0.1";
  int port = 0;            // the public API, health and reflection (gRPC)
  int fleet_port = 0;      // the Fleet service workers register with, on its own port
  int metrics_port = -1;   // -1: off
  int http_port = -1;      // the OpenAI-compatible HTTP API; -1: off, 0: any
  std::string model_name;  // label for metrics; the served model comes from the workers
  std::string tokenizer_dir;  // a folder with tokenizer.json or tokenizer.model; empty: token ids only
  DispatcherOptions engine;   // the dispatcher, its drivers and the fleet
  int max_message_bytes = 4 << 20;
  // The public ports (gRPC and HTTP): TLS from cert and key, callers'
  // certificates checked against `ca` when given; bearer tokens from a file.
  base::TlsFiles public_tls;
  std::string auth_tokens;
  bool auth_health = false;  // health and reflection need a token too (needs public TLS on gRPC)
  // The control plane's mutual TLS (the Fleet port, calls to workers).
  base::TlsFiles control_tls;
};

class RouterServer {
 public:
  static absl::StatusOr<std::unique_ptr<RouterServer>> Start(const RouterOptions& options);
  ~RouterServer();

  std::string address() const;       // host:port of the public gRPC API
  std::string fleet_address() const;  // host:port workers register at
  std::string data_address() const;  // where results arrive
  std::string metrics_address() const;
  std::string http_address() const;  // empty when off
  Dispatcher& dispatcher() { return *dispatcher_; }

  // SIGTERM: new requests get UNAVAILABLE, running ones finish within
  // `budget`, then the servers stop.
  void Drain(std::chrono::milliseconds budget);
  void Wait();
  // Reads the --auth-tokens file again (SIGHUP); running requests keep going.
  absl::Status ReloadTokens();

 private:
  RouterServer() = default;
  void HealthLoop();

  RouterOptions options_;
  std::unique_ptr<base::TlsMaterial> public_tls_;
  std::unique_ptr<base::TlsMaterial> control_tls_;
  std::unique_ptr<CallerAuth> auth_;
  std::unique_ptr<RouterMetrics> metrics_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  std::unique_ptr<RequestIntake> intake_;
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<FleetService> fleet_service_;
  std::unique_ptr<HttpGateway> http_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> fleet_server_;
  int port_ = 0;
  int fleet_port_ = 0;
  std::thread health_thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_ROUTER_SERVER_H_
