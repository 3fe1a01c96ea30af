// A worker's Prometheus metrics (DESIGN.md section 4), served on GET
// /metrics by transport::MetricsHttpServer. Labels on every series: model,
// pipeline, stage, tp_rank.
#ifndef STRATA_WORKER_WORKER_METRICS_H_
#define STRATA_WORKER_WORKER_METRICS_H_

#include <map>
#include <memory>
#include <string>

#include <atomic>
#include <thread>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/statusor.h"
#include "transport/metrics_http.h"

namespace strata::worker {

struct WorkerLabels {
  std::string model, pipeline;
  int stage = 0, tp_rank = 0;
};

class WorkerMetrics {
 public:
  explicit WorkerMetrics(const WorkerLabels& labels);

  // Serves /metrics on host:port (port 0: any; see port()).
  absl::Status Serve(const std::string& host, int port);
  int port() const;
  // The text exposition, as a scrape would see it (tests, logs).
  std::string Render() const;

  prometheus::Histogram* prefill_step_seconds;
  prometheus::Histogram* decode_step_seconds;
  prometheus::Counter* prefill_steps;
  prometheus::Counter* decode_steps;
  prometheus::Counter* failed_steps;
  prometheus::Counter* rows;
  prometheus::Counter* activation_bytes_sent;
  prometheus::Counter* activation_bytes_received;
  prometheus::Histogram* activation_transfer_seconds;
  prometheus::Counter* messages_rejected;
  prometheus::Counter* steps_aborted;
  prometheus::Gauge* kv_blocks_total;
  prometheus::Gauge* kv_blocks_used;
  prometheus::Gauge* weight_bytes_loaded;
  prometheus::Gauge* device_memory_bytes;
  prometheus::Gauge* up;  // 1 while serving
  // Where a step's time went on this worker: queue (waiting to be run),
  // compute (the forward pass without its collectives), allreduce (host
  // time in collectives), send (waiting for the previous send to the next
  // stage and posting this one).
  prometheus::Histogram* queue_seconds;
  prometheus::Histogram* compute_seconds;
  prometheus::Histogram* allreduce_seconds;
  prometheus::Histogram* send_seconds;

  // The counters as numbers, for the Stats RPC: the metrics are the one
  // record of what the worker did.
  double Value(const prometheus::Counter* c) const { return c->Value(); }
  double SumOf(prometheus::Histogram* h) const;

 private:
  void AddStepMetrics(const std::map<std::string, std::string>& labels);
  void AddDataPlaneMetrics(const std::map<std::string, std::string>& labels);
  void AddCapacityMetrics(const std::map<std::string, std::string>& labels);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<transport::MetricsHttpServer> http_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_WORKER_METRICS_H_
