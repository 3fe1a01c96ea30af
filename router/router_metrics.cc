#include "router/router_metrics.h"

namespace strata::router {
namespace {

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}

// Stage phases run from microseconds (a queue wait) to seconds (a long prefill).
prometheus::Histogram::BucketBoundaries PhaseBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
}

}  // namespace

RouterMetrics::RouterMetrics(const std::string& model) : registry_(std::make_shared<prometheus::Registry>()) {
  const std::map<std::string, std::string> labels = {{"model", model}};
  auto hist = [&](const char* name, const char* help) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Labels(labels).Register(*registry_).Add({}, LatencyBuckets());
  };
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Labels(labels).Register(*registry_).Add({});
  };
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Labels(labels).Register(*registry_).Add({});
  };
  ttft = hist("strata_time_to_first_token_seconds", "From arrival to the first generated token");
  inter_token = hist("strata_inter_token_latency_seconds", "Between consecutive tokens of a request");
  request_latency = hist("strata_request_latency_seconds", "From arrival to the last message");
  queue_time = hist("strata_queue_time_seconds", "From arrival to the first step that included the request");
  queue_depth = gauge("strata_queue_depth", "Requests waiting for admission");
  running = gauge("strata_running_sequences", "Sequences holding KV blocks");
  kv_usage = gauge("strata_kv_cache_usage_ratio", "Used KV blocks over all blocks, over the pipelines that are up");
  prompt_tokens = counter("strata_prompt_tokens_total", "Prompt tokens of finished requests");
  generated_tokens = counter("strata_generation_tokens_total", "Tokens generated");
  preemptions = counter("strata_preemptions_total", "Sequences preempted (by recompute) for lack of KV blocks");
  malformed_results = counter("strata_router_malformed_results_total",
                              "Data-plane results the router refused (malformed or not a result)");
  migration_resume = hist("strata_migration_resume_seconds",
                          "From a replica being taken down to the next token of a request that moved off it");
  migrated_ = &prometheus::BuildCounter()
                   .Name("strata_requests_migrated_total")
                   .Help("Requests that continued on another pipeline replica when theirs went down, by why it did")
                   .Labels(labels)
                   .Register(*registry_);
  migrations_failed_ = &prometheus::BuildCounter()
                            .Name("strata_migrations_failed_total")
                            .Help("Requests whose replica went down that could not move (limit: moved too often "
                                  "already; no_replica: none other up), ended UNAVAILABLE")
                            .Labels(labels)
                            .Register(*registry_);
  for (const std::string& reason : MigrationReasons()) Migrated(reason);
  for (const std::string cause : {"limit", "no_replica"}) MigrationsFailed(cause);
  stage_seconds_ = &prometheus::BuildHistogram()
                        .Name("strata_stage_step_seconds")
                        .Help("Time a step spent on a stage, by phase (queue, compute, allreduce, send)")
                        .Labels(labels)
                        .Register(*registry_);
  stage_busy_ = &prometheus::BuildCounter()
                     .Name("strata_pipeline_stage_busy_seconds_total")
                     .Help("Seconds a stage spent computing steps (forward and all-reduce)")
                     .Labels(labels)
                     .Register(*registry_);
  in_flight_ = &prometheus::BuildCounter()
                    .Name("strata_pipeline_in_flight_seconds_total")
                    .Help("Seconds the pipeline had at least one step in flight")
                    .Labels(labels)
                    .Register(*registry_);
  bubble_ = &prometheus::BuildGauge()
                 .Name("strata_pipeline_bubble_ratio")
                 .Help("Share of in-flight time the mean stage was idle, over the last window")
                 .Labels(labels)
                 .Register(*registry_);
  requests_ = &prometheus::BuildCounter()
                   .Name("strata_requests_total")
                   .Help("Requests by outcome")
                   .Labels(labels)
                   .Register(*registry_);
  pipeline_steps_ = &prometheus::BuildCounter()
                         .Name("strata_pipeline_steps_total")
                         .Help("Steps sent to each pipeline replica")
                         .Labels(labels)
                         .Register(*registry_);
  pipeline_shifted_steps_ = &prometheus::BuildCounter()
                                 .Name("strata_pipeline_shifted_steps_total")
                                 .Help("Steps run with the replica's movable stage boundaries moved")
                                 .Labels(labels)
                                 .Register(*registry_);
  pipeline_up_ = &prometheus::BuildGauge()
                      .Name("strata_pipeline_up")
                      .Help("1 while every stage of the pipeline replica is registered, healthy and warmed up")
                      .Labels(labels)
                      .Register(*registry_);
  for (const std::string& outcome : Outcomes()) Requests(outcome);
  AddPipelineFamilies(labels);
}

void RouterMetrics::AddPipelineFamilies(const std::map<std::string, std::string>& labels) {
  auto gauges = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Labels(labels).Register(*registry_);
  };
  kv_used_blocks_ = gauges("strata_pipeline_kv_used_blocks", "KV blocks the replica's sequences hold");
  kv_capacity_blocks_ = gauges("strata_pipeline_kv_capacity_blocks", "KV blocks of the replica (0 while it is down)");
  kv_used_tokens_ = gauges("strata_pipeline_kv_used_tokens", "Tokens the used KV blocks hold room for");
  kv_capacity_tokens_ = gauges("strata_pipeline_kv_capacity_tokens", "KV capacity of the replica in tokens");
  pipeline_running_ = gauges("strata_pipeline_running_sequences", "Sequences holding KV blocks on the replica");
  auto counters = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Labels(labels).Register(*registry_);
  };
  pipeline_generated_ = counters("strata_pipeline_generation_tokens_total", "Tokens generated by the replica");
  prefix_queries_ = counters("strata_prefix_cache_queries_tokens_total",
                             "Tokens of sequences looked up in the replica's prefix cache at admission");
  prefix_hits_ = counters("strata_prefix_cache_hits_tokens_total",
                          "Tokens found in the replica's prefix cache at admission (not computed again)");
  prefix_blocks_ = gauges("strata_prefix_cache_blocks",
                          "KV blocks in the replica's prefix cache (held by sequences or kept for reuse)");
  prefix_evictions_ = counters("strata_prefix_cache_evictions_total",
                               "Cached KV blocks the replica evicted to make room");
}

const std::vector<std::string>& RouterMetrics::Outcomes() {
  static const std::vector<std::string>* outcomes = new std::vector<std::string>{
      "stop", "length", "cancelled", "error", "unavailable", "invalid", "rejected", "deadline"};
  return *outcomes;
}

// Why a replica went down (router/fleet.h DownCause, DownCauseLabel).
const std::vector<std::string>& RouterMetrics::MigrationReasons() {
  static const std::vector<std::string>* reasons = new std::vector<std::string>{
      "dead_stage", "restarted_stage", "hung_stage", "draining_stage", "step_timeout", "step_failed"};
  return *reasons;
}

prometheus::Counter& RouterMetrics::Migrated(const std::string& reason) { return migrated_->Add({{"reason", reason}}); }

prometheus::Counter& RouterMetrics::MigrationsFailed(const std::string& cause) {
  return migrations_failed_->Add({{"cause", cause}});
}

RouterMetrics::PipelineSeries RouterMetrics::Pipeline(const std::string& pipeline) {
  const std::map<std::string, std::string> l = {{"pipeline", pipeline}};
  return {&kv_used_blocks_->Add(l),    &kv_capacity_blocks_->Add(l), &kv_used_tokens_->Add(l),
          &kv_capacity_tokens_->Add(l), &pipeline_running_->Add(l),   &pipeline_generated_->Add(l),
          &prefix_queries_->Add(l),     &prefix_hits_->Add(l),        &prefix_blocks_->Add(l),
          &prefix_evictions_->Add(l)};
}

prometheus::Counter& RouterMetrics::PipelineSteps(const std::string& pipeline) {
  return pipeline_steps_->Add({{"pipeline", pipeline}});
}

prometheus::Counter& RouterMetrics::PipelineShiftedSteps(const std::string& pipeline) {
  return pipeline_shifted_steps_->Add({{"pipeline", pipeline}});
}

prometheus::Histogram& RouterMetrics::StageSeconds(const std::string& pipeline, int32_t stage,
                                                  const std::string& phase) {
  return stage_seconds_->Add({{"pipeline", pipeline}, {"stage", std::to_string(stage)}, {"phase", phase}},
                             PhaseBuckets());
}

prometheus::Counter& RouterMetrics::StageBusySeconds(const std::string& pipeline, int32_t stage) {
  return stage_busy_->Add({{"pipeline", pipeline}, {"stage", std::to_string(stage)}});
}

prometheus::Counter& RouterMetrics::InFlightSeconds(const std::string& pipeline) {
  return in_flight_->Add({{"pipeline", pipeline}});
}

prometheus::Gauge& RouterMetrics::Bubble(const std::string& pipeline) { return bubble_->Add({{"pipeline", pipeline}}); }

prometheus::Counter& RouterMetrics::Requests(const std::string& outcome) { return requests_->Add({{"outcome", outcome}}); }

prometheus::Gauge& RouterMetrics::PipelineUp(const std::string& pipeline) {
  return pipeline_up_->Add({{"pipeline", pipeline}});
}

absl::Status RouterMetrics::Serve(const std::string& host, int port) {
  http_ = std::make_unique<transport::MetricsHttpServer>(registry_);
  return http_->Start(host, port);
}

std::string RouterMetrics::Render() const { return transport::RenderMetrics(*registry_); }

}  // namespace strata::router
