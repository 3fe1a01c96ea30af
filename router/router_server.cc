#include "router/router_server.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "model/file_system.h"
#include "transport/ucx_transport.h"

namespace strata::router {

using std::chrono::milliseconds;

namespace {

// With --auth-health, every call on the public port needs a known bearer
// token, health and reflection included (the Inference handlers then check
// the token's models and limits as always).
class BearerCheck : public grpc::AuthMetadataProcessor {
 public:
  explicit BearerCheck(CallerAuth* auth) : auth_(auth) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext*, OutputMetadata*,
                       OutputMetadata*) override {
    auto it = metadata.find("authorization");
    const std::string_view value =
        it == metadata.end() ? std::string_view() : std::string_view(it->second.data(), it->second.size());
    absl::Status s = auth_->Authenticate(value);
    return s.ok() ? grpc::Status::OK : grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(s.message()));
  }

 private:
  CallerAuth* auth_;
};

// The PEM files of `files`, checked; null when none is set.
absl::StatusOr<std::unique_ptr<base::TlsMaterial>> LoadIfSet(const base::TlsFiles& files, const std::string& prefix,
                                                             bool mutual) {
  if (files.empty()) return nullptr;
  auto m = base::LoadTls(files, prefix, mutual);
  if (!m.ok()) return m.status();
  return std::make_unique<base::TlsMaterial>(std::move(*m));
}

}  // namespace

absl::StatusOr<std::unique_ptr<RouterServer>> RouterServer::Start(const RouterOptions& options) {
  std::unique_ptr<RouterServer> r(new RouterServer());
  r->options_ = options;
  if (!options.public_tls.empty() && options.public_tls.cert.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  auto public_tls = LoadIfSet(options.public_tls, "tls", false);
  if (!public_tls.ok()) return public_tls.status();
  r->public_tls_ = std::move(*public_tls);
  auto control_tls = LoadIfSet(options.control_tls, "mtls", true);
  if (!control_tls.ok()) return control_tls.status();
  r->control_tls_ = std::move(*control_tls);
  if (options.auth_health && (options.auth_tokens.empty() || !r->public_tls_)) {
    return absl::InvalidArgumentError("--auth-health needs --auth-tokens and --tls-cert");
  }
  if (!options.auth_tokens.empty()) {
    auto auth = CallerAuth::Load(options.auth_tokens);
    if (!auth.ok()) return auth.status();
    r->auth_ = std::move(*auth);
  } else {
    r->auth_ = std::make_unique<CallerAuth>();
  }
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
  uo.tls = r->control_tls_.get();
  auto data_plane = transport::UcxTransport::Create(uo);
  if (!data_plane.ok()) return data_plane.status();
  // With mutual TLS, data-plane messages are signed with a key per
  // pipeline epoch that only that pipeline's certified workers receive;
  // until a pipeline warms up, nothing is accepted.
  if (r->control_tls_) {
    (*data_plane)->SetDataKey(transport::DataKey{});
    dispatch.sign_data_plane = true;
  }
  r->dispatcher_ = std::make_unique<Dispatcher>(dispatch, r->metrics_.get(), std::move(*data_plane),
                                                MakeGrpcWorkerControl(base::ChannelCredentials(r->control_tls_.get())));
  r->intake_ = std::make_unique<RequestIntake>(r->dispatcher_.get(), r->metrics_.get(), r->tokenizer_.get(),
                                               r->auth_.get());
  r->inference_ = std::make_unique<InferenceService>(r->intake_.get());
  r->fleet_service_ = std::make_unique<FleetService>(&r->dispatcher_->fleet(), r->dispatcher_->data_address());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  auto public_creds = base::ServerCredentials(
      r->public_tls_.get(), r->public_tls_ && !r->public_tls_->ca_pem.empty() ? base::ClientCerts::kOptional
                                                                             : base::ClientCerts::kNone);
  if (options.auth_health) public_creds->SetAuthMetadataProcessor(std::make_shared<BearerCheck>(r->auth_.get()));
  // No SO_REUSEPORT (gRPC's default): a second router on a taken port
  // fails to listen instead of sharing the clients.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(absl::StrCat(options.host, ":", options.port), public_creds, &r->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(r->inference_.get());
  r->server_ = builder.BuildAndStart();
  if (r->server_ == nullptr || r->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("the router cannot listen on ", options.host, ":", options.port));
  }
  grpc::ServerBuilder fleet;
  fleet.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  fleet.AddListeningPort(absl::StrCat(options.host, ":", options.fleet_port),
                         base::ServerCredentials(r->control_tls_.get(), base::ClientCerts::kRequired),
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
    h.tls = r->public_tls_.get();
    h.auth_health = options.auth_health;
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

absl::Status RouterServer::ReloadTokens() { return auth_->Reload(); }

}  // namespace strata::router
