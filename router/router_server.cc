#include "router/router_server.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "model/file_system.h"
#include "transport/ucx_transport.h"

namespace strata::router {

using std::chrono::milliseconds;

absl::StatusOr<std::unique_ptr<RouterServer>> RouterServer::Start(const RouterOptions& options) {
  std::unique_ptr<RouterServer> r(new RouterServer());
  r->options_ = options;
  r->metrics_ = std::make_unique<RouterMetrics>(options.model_name);
  if (options.metrics_port >= 0) {
    if (auto s = r->metrics_->Serve(options.host, options.metrics_port); !s.ok()) return s;
  }
  if (!options.tokenizer_dir.empty()) {
    auto tok = model::Tokenizer::Load(model::PosixFileSystem(), options.tokenizer_dir);
    if (!tok.ok()) return absl::InvalidArgumentError(absl::StrCat("--tokenizer: ", tok.status().message()));
    r->tokenizer_ = std::move(*tok);
  }
  DispatcherOptions dispatch = options.engine;
  dispatch.host = options.host;
  transport::UcxOptions uo;
  uo.listen = {dispatch.host, dispatch.data_port};
  uo.peer_failure_detection = dispatch.ucx_peer_errors;
  auto data_plane = transport::UcxTransport::Create(uo);
  if (!data_plane.ok()) return data_plane.status();
  r->dispatcher_ = std::make_unique<Dispatcher>(dispatch, r->metrics_.get(), std::move(*data_plane),
                                                MakeGrpcWorkerControl());
  r->intake_ = std::make_unique<RequestIntake>(r->dispatcher_.get(), r->metrics_.get(), r->tokenizer_.get());
  r->inference_ = std::make_unique<InferenceService>(r->intake_.get());
  r->fleet_service_ = std::make_unique<FleetService>(&r->dispatcher_->fleet(), r->dispatcher_->data_address());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.host, ":", options.port), grpc::InsecureServerCredentials(), &r->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(r->inference_.get());
  r->server_ = builder.BuildAndStart();
  if (r->server_ == nullptr || r->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("the router cannot listen on ", options.host, ":", options.port));
  }
  grpc::ServerBuilder fleet;
  fleet.AddListeningPort(absl::StrCat(options.host, ":", options.fleet_port), grpc::InsecureServerCredentials(),
                         &r->fleet_port_);
  fleet.SetMaxReceiveMessageSize(options.max_message_bytes);
  fleet.RegisterService(r->fleet_service_.get());
  r->fleet_server_ = fleet.BuildAndStart();
  if (r->fleet_server_ == nullptr || r->fleet_port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("the Fleet service cannot listen on ", options.host, ":", options.fleet_port));
  }
  r->server_->GetHealthCheckService()->SetServingStatus(false);
  if (options.http_port >= 0) {
    HttpGatewayOptions h;
    h.host = options.host;
    h.port = options.http_port;
    h.max_body_bytes = static_cast<size_t>(options.max_message_bytes);
    auto http = HttpGateway::Start(h, r->intake_.get());
    if (!http.ok()) return http.status();
    r->http_ = std::move(*http);
  }
  RouterServer* raw = r.get();
  r->health_thread_ = std::thread([raw] { raw->HealthLoop(); });
  return r;
}

// The health service follows the dispatcher (polled: it has no callbacks).
void RouterServer::HealthLoop() {
  auto* health = server_->GetHealthCheckService();
  bool last = false, first = true;
  while (!stop_) {
    const bool serving = dispatcher_->Serving();
    if (serving != last || first) {
      health->SetServingStatus(serving);
      health->SetServingStatus("strata.v1.Inference", serving);
      last = serving;
      first = false;
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
}

RouterServer::~RouterServer() {
  stop_ = true;
  http_.reset();
  if (health_thread_.joinable()) health_thread_.join();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (fleet_server_) fleet_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  dispatcher_.reset();
}

std::string RouterServer::address() const { return absl::StrCat(options_.host, ":", port_); }
std::string RouterServer::fleet_address() const { return absl::StrCat(options_.host, ":", fleet_port_); }
std::string RouterServer::data_address() const { return dispatcher_->data_address(); }
std::string RouterServer::http_address() const {
  return http_ ? absl::StrCat(options_.host, ":", http_->port()) : "";
}

std::string RouterServer::metrics_address() const {
  return metrics_->port() >= 0 ? absl::StrCat(options_.host, ":", metrics_->port()) : "";
}

void RouterServer::Drain(milliseconds budget) {
  server_->GetHealthCheckService()->SetServingStatus(false);
  dispatcher_->Drain(budget);
  stop_ = true;
  if (health_thread_.joinable()) health_thread_.join();
  server_->GetHealthCheckService()->SetServingStatus(false);
  http_.reset();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  fleet_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

void RouterServer::Wait() { server_->Wait(); }

}  // namespace strata::router
