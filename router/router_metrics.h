// The router's Prometheus metrics (DESIGN.md section 4), served on GET
// /metrics by transport::MetricsHttpServer. Label on every series: model.
#ifndef STRATA_ROUTER_ROUTER_METRICS_H_
#define STRATA_ROUTER_ROUTER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"
#include "transport/metrics_http.h"

namespace strata::router {

class RouterMetrics {
 public:
  explicit RouterMetrics(const std::string& model);
  absl::Status Serve(const std::string& host, int port);
  int port() const { return http_ ? http_->port() : -1; }
  std::string Render() const;

  // outcome: ok, stop, length, cancelled, error, unavailable, invalid, rejected, deadline
  prometheus::Counter& Requests(const std::string& outcome);
  prometheus::Gauge& PipelineUp(const std::string& pipeline);
  prometheus::Counter& PipelineSteps(const std::string& pipeline);
  // The time a step spent on one stage, by phase (queue, compute,
  // allreduce, send), from the timings every StepResult carries.
  prometheus::Histogram& StageSeconds(const std::string& pipeline, int32_t stage, const std::string& phase);
  // Pipeline bubble: seconds each stage computed (compute + allreduce) and
  // seconds the pipeline had steps in flight; the bubble ratio is
  // 1 - mean stage busy / in flight, over the last window.
  prometheus::Counter& StageBusySeconds(const std::string& pipeline, int32_t stage);
  prometheus::Counter& InFlightSeconds(const std::string& pipeline);
  prometheus::Gauge& Bubble(const std::string& pipeline);

  prometheus::Histogram* ttft;
  prometheus::Histogram* inter_token;
  prometheus::Histogram* request_latency;
  prometheus::Histogram* queue_time;
  prometheus::Gauge* queue_depth;
  prometheus::Gauge* running;
  prometheus::Gauge* kv_usage;
  prometheus::Counter* prompt_tokens;
  prometheus::Counter* generated_tokens;
  prometheus::Counter* preemptions;
  prometheus::Counter* malformed_results;
  prometheus::Counter* migrated;  // requests moved to another replica when theirs went down

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Gauge>* pipeline_up_;
  prometheus::Family<prometheus::Counter>* pipeline_steps_;
  prometheus::Family<prometheus::Histogram>* stage_seconds_;
  prometheus::Family<prometheus::Counter>* stage_busy_;
  prometheus::Family<prometheus::Counter>* in_flight_;
  prometheus::Family<prometheus::Gauge>* bubble_;
  std::unique_ptr<transport::MetricsHttpServer> http_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_ROUTER_METRICS_H_
