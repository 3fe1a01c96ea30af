#include "transport/metrics_http.h"

#include <httplib.h>

#include <sstream>

#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"

namespace strata::transport {

MetricsHttpServer::MetricsHttpServer(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)), server_(std::make_unique<httplib::Server>()) {}

MetricsHttpServer::~MetricsHttpServer() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

absl::Status MetricsHttpServer::Start(const std::string& host, int port) {
  prometheus::Registry* registry = registry_.get();
  server_->Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(RenderMetrics(*registry), "text/plain; version=0.0.4");
  });
  // A connection holds one of the pool's threads while httplib reads its
  // request, so a slow or idle client must not hold one for long: every
  // read waits at most kReadTimeout for the next bytes (a client sending a
  // byte every 1.5 s is cut off after its first pause), an idle kept-alive
  // connection is closed after kKeepAlive, and kThreads connections are
  // served at once (before, two threads and httplib's 5 s timeouts: two
  // such clients held both and 3 scrapes of 4 timed out).
  server_->new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  server_->set_read_timeout(kReadTimeout);
  server_->set_write_timeout(kWriteTimeout);
  server_->set_keep_alive_timeout(kKeepAlive.count());
  server_->set_keep_alive_max_count(kKeepAliveRequests);
  // SO_REUSEADDR without httplib's SO_REUSEPORT: a taken port fails to bind.
  server_->set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  port_ = port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (port_ <= 0) {
    port_ = -1;
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", host, ":", port));
  }
  httplib::Server* server = server_.get();
  thread_ = std::thread([server] { server->listen_after_bind(); });
  return absl::OkStatus();
}

std::string RenderMetrics(prometheus::Registry& registry) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry.Collect());
  return out.str();
}

}  // namespace strata::transport
