// The /metrics endpoint of every strata process: a small HTTP/1.1 server
// thread that answers GET /metrics with a prometheus-cpp registry in the
// text exposition format (404 elsewhere, 405 for other methods). It lives
// here, beside the data plane, because both the router and the workers
// serve it and they share nothing but proto/ and transport/.
// (prometheus-cpp's own CivetWeb exposer refused to start inside the worker
// binary, mg_start returning null without a message.)
#ifndef STRATA_TRANSPORT_METRICS_HTTP_H_
#define STRATA_TRANSPORT_METRICS_HTTP_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <prometheus/registry.h>

#include "absl/status/status.h"

namespace strata::transport {

// A registry in the Prometheus text exposition format.
std::string RenderMetrics(prometheus::Registry& registry);

class MetricsHttpServer {
 public:
  explicit MetricsHttpServer(std::shared_ptr<prometheus::Registry> registry) : registry_(std::move(registry)) {}
  ~MetricsHttpServer();

  // Listens on host:port (IPv4; port 0 picks one) and serves until destroyed.
  absl::Status Start(const std::string& host, int port);
  int port() const { return port_; }
  // The exposition text a scrape would get.
  std::string Render() const { return RenderMetrics(*registry_); }

 private:
  void Loop();

  std::shared_ptr<prometheus::Registry> registry_;
  int listen_fd_ = -1;
  int port_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace strata::transport

#endif  // STRATA_TRANSPORT_METRICS_HTTP_H_
