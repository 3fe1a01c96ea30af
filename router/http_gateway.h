// The OpenAI-compatible HTTP API beside gRPC (cpp-httplib from Debian):
// POST /v1/completions and /v1/chat/completions (plain JSON, or server-sent
// events with "stream": true), GET /v1/models, GET /health (the process is
// alive) and GET /ready (a pipeline serves). Requests take the same path as
// gRPC's (RequestIntake: validation, admission, the dispatcher, the output
// processor); router/openai_api.h does the JSON. A client that goes away,
// streaming or not, cancels its request and frees its KV blocks at once
// (router/http_peer_watch.h). Bearer tokens in the `Authorization` header
// follow the same rules as gRPC's (401, 403, 429); HTTPS when a
// certificate is given.
#ifndef STRATA_ROUTER_HTTP_GATEWAY_H_
#define STRATA_ROUTER_HTTP_GATEWAY_H_

#include <cstddef>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "base/tls.h"
#include "router/request_intake.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace strata::router {

struct HttpGatewayOptions {
  std::string host = "127.0.0.1";
  int port = 0;                          // 0: any free port
  size_t max_body_bytes = 4 << 20;       // larger bodies: 413
  int threads = 64;                      // concurrent requests (a stream holds one)
  // HTTPS with this certificate (null: plain HTTP); with a CA in it, every
  // caller must present a certificate that chains to it.
  const base::TlsMaterial* tls = nullptr;
  bool auth_health = false;  // /health and /ready need a bearer token too
};

class HttpGateway {
 public:
  // `intake` must outlive the gateway. UNAVAILABLE when the port is taken.
  static absl::StatusOr<std::unique_ptr<HttpGateway>> Start(const HttpGatewayOptions& options, RequestIntake* intake);
  ~HttpGateway();  // stops serving; running streams end
  HttpGateway(const HttpGateway&) = delete;
  HttpGateway& operator=(const HttpGateway&) = delete;

  int port() const { return port_; }

 private:
  HttpGateway(RequestIntake* intake, std::unique_ptr<httplib::Server> server, bool auth_health);
  void Routes();
  void Completion(const httplib::Request& req, httplib::Response& res, bool chat);
  void Models(httplib::Response& res);
  absl::Status HealthAuth(const httplib::Request& req);

  RequestIntake* intake_;
  std::unique_ptr<httplib::Server> server_;
  bool auth_health_ = false;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_HTTP_GATEWAY_H_
