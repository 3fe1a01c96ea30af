#include "worker/worker_metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <poll.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <sstream>

#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"

namespace strata::worker {
namespace {

prometheus::Histogram::BucketBoundaries StepBuckets() {
  return {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30};
}

prometheus::Histogram::BucketBoundaries TransferBuckets() {
  return {0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1};
}

}  // namespace

WorkerMetrics::WorkerMetrics(const WorkerLabels& l) : registry_(std::make_shared<prometheus::Registry>()) {
  const std::map<std::string, std::string> labels = {
      {"model", l.model}, {"pipeline", l.pipeline}, {"stage", absl::StrCat(l.stage)}, {"tp_rank", absl::StrCat(l.tp_rank)}};
  auto& step_seconds = prometheus::BuildHistogram()
                           .Name("strata_worker_step_seconds")
                           .Help("Time to compute one step on this worker, by phase")
                           .Labels(labels)
                           .Register(*registry_);
  prefill_step_seconds = &step_seconds.Add({{"phase", "prefill"}}, StepBuckets());
  decode_step_seconds = &step_seconds.Add({{"phase", "decode"}}, StepBuckets());
  auto& steps = prometheus::BuildCounter()
                    .Name("strata_worker_steps_total")
                    .Help("Steps run, by phase (prefill: any prompt chunk; decode: decode rows only) and failed")
                    .Labels(labels)
                    .Register(*registry_);
  prefill_steps = &steps.Add({{"phase", "prefill"}});
  decode_steps = &steps.Add({{"phase", "decode"}});
  failed_steps = &steps.Add({{"phase", "failed"}});
  rows = &prometheus::BuildCounter()
              .Name("strata_worker_rows_total")
              .Help("Token rows computed")
              .Labels(labels)
              .Register(*registry_)
              .Add({});
  auto& bytes = prometheus::BuildCounter()
                    .Name("strata_worker_activation_bytes_total")
                    .Help("Data-plane bytes, by direction")
                    .Labels(labels)
                    .Register(*registry_);
  activation_bytes_sent = &bytes.Add({{"direction", "sent"}});
  activation_bytes_received = &bytes.Add({{"direction", "received"}});
  activation_transfer_seconds = &prometheus::BuildHistogram()
                                     .Name("strata_worker_activation_transfer_seconds")
                                     .Help("Time to send one data-plane message (activations or result)")
                                     .Labels(labels)
                                     .Register(*registry_)
                                     .Add({}, TransferBuckets());
  messages_rejected = &prometheus::BuildCounter()
                           .Name("strata_worker_messages_rejected_total")
                           .Help("Malformed data-plane messages dropped")
                           .Labels(labels)
                           .Register(*registry_)
                           .Add({});
  steps_aborted = &prometheus::BuildCounter()
                       .Name("strata_worker_steps_aborted_total")
                       .Help("Queued steps dropped by Abort")
                       .Labels(labels)
                       .Register(*registry_)
                       .Add({});
  kv_blocks_total = &prometheus::BuildGauge()
                         .Name("strata_worker_kv_blocks_total")
                         .Help("Blocks in this worker's paged KV pool")
                         .Labels(labels)
                         .Register(*registry_)
                         .Add({});
  kv_blocks_used = &prometheus::BuildGauge()
                        .Name("strata_worker_kv_blocks_used")
                        .Help("Distinct KV blocks the latest step referenced (the router owns the block tables)")
                        .Labels(labels)
                        .Register(*registry_)
                        .Add({});
  weight_bytes_loaded = &prometheus::BuildGauge()
                             .Name("strata_worker_weight_bytes_loaded")
                             .Help("Checkpoint bytes this worker loaded (its slices only)")
                             .Labels(labels)
                             .Register(*registry_)
                             .Add({});
  device_memory_bytes = &prometheus::BuildGauge()
                             .Name("strata_worker_device_memory_bytes")
                             .Help("Bytes of weights and KV pool held in backend memory")
                             .Labels(labels)
                             .Register(*registry_)
                             .Add({});
  up = &prometheus::BuildGauge()
            .Name("strata_worker_up")
            .Help("1 while the worker serves steps")
            .Labels(labels)
            .Register(*registry_)
            .Add({});
}

WorkerMetrics::~WorkerMetrics() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

absl::Status WorkerMetrics::Serve(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("metrics host \"", host, "\" is not an IPv4 address"));
  }
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::listen(listen_fd_, 16) != 0) {
    return absl::UnavailableError(absl::StrCat("metrics cannot listen on ", host, ":", port, ": ", std::strerror(errno)));
  }
  socklen_t len = sizeof(a);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] { ServeLoop(); });
  return absl::OkStatus();
}

void WorkerMetrics::ServeLoop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    // Read the request head (bounded), answer, close.
    std::string req;
    char buf[1024];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      req.append(buf, static_cast<size_t>(n));
    }
    std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
    if (req.rfind("GET /metrics ", 0) == 0 || req.rfind("GET /metrics?", 0) == 0) {
      body = Render();
    } else if (req.rfind("GET ", 0) == 0) {
      status = "404 Not Found";
      body = "strata worker: metrics are at /metrics\n";
    } else {
      status = "405 Method Not Allowed";
      body = "GET only\n";
    }
    const std::string head = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type, "\r\nContent-Length: ",
                                          body.size(), "\r\nConnection: close\r\n\r\n");
    const std::string out = head + body;
    size_t sent = 0;
    while (sent < out.size()) {
      const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    ::close(fd);
  }
}

std::string WorkerMetrics::Render() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace strata::worker
