#include "worker/worker_metrics.h"

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
  AddStepMetrics(labels);
  AddDataPlaneMetrics(labels);
  AddCapacityMetrics(labels);
}

void WorkerMetrics::AddStepMetrics(const std::map<std::string, std::string>& labels) {
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
}

void WorkerMetrics::AddDataPlaneMetrics(const std::map<std::string, std::string>& labels) {
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
}

void WorkerMetrics::AddCapacityMetrics(const std::map<std::string, std::string>& labels) {
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
  auto& phases = prometheus::BuildHistogram()
                     .Name("strata_worker_step_phase_seconds")
                     .Help("Where a step's time went on this worker: queue, compute, allreduce, send")
                     .Labels(labels)
                     .Register(*registry_);
  queue_seconds = &phases.Add({{"phase", "queue"}}, TransferBuckets());
  compute_seconds = &phases.Add({{"phase", "compute"}}, StepBuckets());
  allreduce_seconds = &phases.Add({{"phase", "allreduce"}}, TransferBuckets());
  send_seconds = &phases.Add({{"phase", "send"}}, TransferBuckets());
  up = &prometheus::BuildGauge()
            .Name("strata_worker_up")
            .Help("1 while the worker serves steps")
            .Labels(labels)
            .Register(*registry_)
            .Add({});
}

absl::Status WorkerMetrics::Serve(const std::string& host, int port) {
  http_ = std::make_unique<transport::MetricsHttpServer>(registry_);
  return http_->Start(host, port);
}

double WorkerMetrics::SumOf(prometheus::Histogram* h) const { return h->Collect().histogram.sample_sum; }

int WorkerMetrics::port() const { return http_ ? http_->port() : -1; }

std::string WorkerMetrics::Render() const { return transport::RenderMetrics(*registry_); }

}  // namespace strata::worker
