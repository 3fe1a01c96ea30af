// The router's Prometheus metrics (DESIGN.md section 4), served on GET
// /metrics by transport::MetricsHttpServer. Label on every series: model;
// the per-replica series add pipeline (and stage, phase where they say).
#ifndef STRATA_ROUTER_ROUTER_METRICS_H_
#define STRATA_ROUTER_ROUTER_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

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

  // How requests end. Each outcome is one status the client gets, so the
  // outcome is the code (no second counter by code): stop and length are
  // OK, cancelled CANCELLED, error INTERNAL, unavailable UNAVAILABLE,
  // invalid INVALID_ARGUMENT, rejected RESOURCE_EXHAUSTED, deadline
  // DEADLINE_EXCEEDED. Every outcome's series exists from the start (at 0),
  // so error ratios are 0 rather than absent before the first error.
  static const std::vector<std::string>& Outcomes();
  prometheus::Counter& Requests(const std::string& outcome);
  prometheus::Gauge& PipelineUp(const std::string& pipeline);
  prometheus::Counter& PipelineSteps(const std::string& pipeline);
  // Steps run with the pipeline's movable stage boundaries moved
  // (--movable-boundaries): the balancer's choice, one count per step.
  prometheus::Counter& PipelineShiftedSteps(const std::string& pipeline);
  // The time a step spent on one stage, by phase (queue, compute,
  // allreduce, send), from the timings every StepResult carries.
  prometheus::Histogram& StageSeconds(const std::string& pipeline, int32_t stage, const std::string& phase);
  // Pipeline bubble: seconds each stage computed (compute + allreduce) and
  // seconds the pipeline had steps in flight; the bubble ratio is
  // 1 - mean stage busy / in flight, over the last window.
  prometheus::Counter& StageBusySeconds(const std::string& pipeline, int32_t stage);
  prometheus::Counter& InFlightSeconds(const std::string& pipeline);
  prometheus::Gauge& Bubble(const std::string& pipeline);

  // A replica's capacity and load, set by the dispatcher every turn (0
  // while the replica is down: it has no capacity then). Tokens are blocks
  // x the replica's block size; used tokens count whole blocks.
  struct PipelineSeries {
    prometheus::Gauge* kv_used_blocks;
    prometheus::Gauge* kv_capacity_blocks;
    prometheus::Gauge* kv_used_tokens;
    prometheus::Gauge* kv_capacity_tokens;
    prometheus::Gauge* running;               // sequences holding KV blocks
    prometheus::Counter* generated_tokens;  // tokens sampled by this replica
    // The prefix cache, as vLLM counts it: at each admission the
    // sequence's tokens are queried and its cached prefix is a hit (tokens
    // not computed again); the blocks it holds (published, held by a
    // sequence or kept for reuse) and the cached blocks evicted for room.
    prometheus::Counter* prefix_queries_tokens;
    prometheus::Counter* prefix_hits_tokens;
    prometheus::Gauge* prefix_cached_blocks;
    prometheus::Counter* prefix_evictions;
  };
  PipelineSeries Pipeline(const std::string& pipeline);

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
  // Requests moved to another replica when theirs went down, by why it
  // went down (MigrationReasons); requests whose replica went down and
  // that could not move (`cause`: "limit", moved max_migrations times
  // already; "no_replica", none other up), ended UNAVAILABLE after the
  // tokens already sent; and, of a migrated request, the time from its
  // replica being taken down to its next token on another.
  static const std::vector<std::string>& MigrationReasons();
  prometheus::Counter& Migrated(const std::string& reason);
  prometheus::Counter& MigrationsFailed(const std::string& cause);
  prometheus::Histogram* migration_resume;

 private:
  void AddPipelineFamilies(const std::map<std::string, std::string>& labels);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* migrated_;
  prometheus::Family<prometheus::Counter>* migrations_failed_;
  prometheus::Family<prometheus::Gauge>* pipeline_up_;
  prometheus::Family<prometheus::Counter>* pipeline_steps_;
  prometheus::Family<prometheus::Counter>* pipeline_shifted_steps_;
  prometheus::Family<prometheus::Histogram>* stage_seconds_;
  prometheus::Family<prometheus::Counter>* stage_busy_;
  prometheus::Family<prometheus::Counter>* in_flight_;
  prometheus::Family<prometheus::Gauge>* bubble_;
  prometheus::Family<prometheus::Gauge>* kv_used_blocks_;
  prometheus::Family<prometheus::Gauge>* kv_capacity_blocks_;
  prometheus::Family<prometheus::Gauge>* kv_used_tokens_;
  prometheus::Family<prometheus::Gauge>* kv_capacity_tokens_;
  prometheus::Family<prometheus::Gauge>* pipeline_running_;
  prometheus::Family<prometheus::Counter>* pipeline_generated_;
  prometheus::Family<prometheus::Counter>* prefix_queries_;
  prometheus::Family<prometheus::Counter>* prefix_hits_;
  prometheus::Family<prometheus::Gauge>* prefix_blocks_;
  prometheus::Family<prometheus::Counter>* prefix_evictions_;
  std::unique_ptr<transport::MetricsHttpServer> http_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_ROUTER_METRICS_H_
