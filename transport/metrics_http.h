// The /metrics endpoint of every strata process: GET /metrics answers with
// a prometheus-cpp registry in the text exposition format (404 elsewhere),
// served by cpp-httplib (the library of the router's HTTP API) on a thread
// of its own. It lives here, beside the data plane, because both the router
// and the workers serve it and they share nothing but proto/ and transport/.
// (prometheus-cpp's own CivetWeb exposer refused to start inside the worker
// binary, mg_start returning null without a message.)
#ifndef STRATA_TRANSPORT_METRICS_HTTP_H_
#define STRATA_TRANSPORT_METRICS_HTTP_H_

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include <prometheus/registry.h>

#include "absl/status/status.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace strata::transport {

// A registry in the Prometheus text exposition format.
std::string RenderMetrics(prometheus::Registry& registry);

// Scrapes are served by a pool of kThreads threads; slow and idle clients
// are cut off by short timeouts so they cannot hold them (a scrape is one
// small GET).
class MetricsHttpServer {
 public:
  static constexpr int kThreads = 16;
  static constexpr std::chrono::milliseconds kReadTimeout{1000};   // between a request's bytes
  static constexpr std::chrono::milliseconds kWriteTimeout{2000};  // between a response's writes
  static constexpr std::chrono::seconds kKeepAlive{1};             // an idle connection waits this long
  static constexpr int kKeepAliveRequests = 16;                    // requests per connection

  explicit MetricsHttpServer(std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpServer();

  // Listens on host:port (port 0 picks one) and serves until destroyed.
  absl::Status Start(const std::string& host, int port);
  int port() const { return port_; }
  // The exposition text a scrape would get.
  std::string Render() const { return RenderMetrics(*registry_); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = -1;
  std::thread thread_;
};

}  // namespace strata::transport

#endif  // STRATA_TRANSPORT_METRICS_HTTP_H_
