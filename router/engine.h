// The router's core: the fleet (which workers form which pipeline replica,
// checked against the model), one scheduler per replica, the pipeline
// driver (up to S micro-batches in flight for S stages, over the UCX data
// plane), heartbeats, and the hand-off between gRPC handler threads and the
// one thread that owns every scheduler.
#ifndef STRATA_ROUTER_ENGINE_H_
#define STRATA_ROUTER_ENGINE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "router/router_metrics.h"
#include "router/scheduler.h"
#include "strata/v1/inference.pb.h"
#include "strata/v1/worker.grpc.pb.h"
#include "transport/ucx_transport.h"

namespace strata::router {

struct EngineOptions {
  std::string host = "127.0.0.1";  // data-plane address workers send results to
  int data_port = 0;
  bool ucx_peer_errors = true;
  SchedulerOptions scheduler;
  int64_t max_queue = 256;           // waiting requests beyond this: RESOURCE_EXHAUSTED
  int32_t max_tokens_limit = 4096;   // largest max_tokens a request may ask for
  int64_t max_prompt_tokens = 32768;
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds down_after{5000};  // no heartbeat this long: the pipeline is down
  std::chrono::milliseconds step_timeout{30000};
};

// A request's stream of events, filled by the engine thread and drained by
// the gRPC handler.
class RequestStream : public SequenceSink {
 public:
  struct Event {
    std::vector<TokenOut> tokens;
    bool finished = false;
    Finish reason = Finish::kStop;
    int32_t prompt_tokens = 0, completion_tokens = 0;
    std::string error;
    std::vector<float> score;
  };
  void Token(const TokenOut& token) override;
  void Finished(Finish reason, int32_t prompt_tokens, int32_t completion_tokens, const std::string& error,
                const std::vector<float>& score) override;
  // Waits up to `timeout` for events; returns what arrived (tokens merged).
  Event Next(std::chrono::milliseconds timeout);
  bool finished() const;

  std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();
  // Set by the engine when the sequence first enters a step (queue time).
  std::atomic<std::chrono::steady_clock::time_point> first_step{std::chrono::steady_clock::time_point()};

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Event pending_;
  bool has_pending_ = false;
  bool finished_ = false;
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options, RouterMetrics* metrics);
  ~Engine();

  std::string data_address() const;

  // Fleet: a worker registers (validated against its pipeline's plan and the
  // model). OK, or INVALID_ARGUMENT / FAILED_PRECONDITION with the reason.
  absl::Status Register(const v1::RegisterRequest& request);

  // Submits a validated sequence; returns its handle for Cancel. Requests
  // fail fast with UNAVAILABLE (no pipeline up) or RESOURCE_EXHAUSTED (the
  // queue is full) through the stream.
  uint64_t Submit(SequenceSpec spec, std::shared_ptr<RequestStream> stream);
  void Cancel(uint64_t handle);

  // The served model (from the first registration), for validation and
  // ListModels; false until a worker registered.
  bool Model(v1::ModelInfo* info, int32_t* pipelines_up, int32_t* pipelines_total) const;
  bool Serving() const { return pipelines_up_.load() > 0; }
  // The smallest KV pool of the pipelines that are up, in tokens (0: none).
  int64_t KvCapacityTokens() const;
  int64_t queued() const { return queued_.load(); }
  const EngineOptions& options() const { return options_; }

  // Stops taking requests; waits up to `budget` for running ones.
  void Drain(std::chrono::milliseconds budget);

  struct Pipeline;
  struct StepSends;

 private:
  explicit Engine(const EngineOptions& options, RouterMetrics* metrics);
  void Loop();
  void HeartbeatLoop();
  void Schedule(Pipeline* p);
  void HandleResult(const transport::Message& m);
  void SetDown(Pipeline* p, const std::string& why);
  void TryBringUp(Pipeline* p);
  void UpdateGauges();
  absl::Status SendPlan(Pipeline* p, const transport::StepPlan& plan);
  void ReapSends();

  EngineOptions options_;
  RouterMetrics* metrics_;
  std::unique_ptr<transport::UcxTransport> transport_;
  std::thread loop_, heartbeat_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> draining_{false};

  mutable std::mutex mu_;  // guards everything below
  std::map<std::string, std::unique_ptr<Pipeline>> pipelines_;
  bool have_model_ = false;
  v1::ModelInfo model_;  // name and shape
  struct Pending {
    uint64_t handle;
    SequenceSpec spec;
    std::shared_ptr<RequestStream> stream;
  };
  std::deque<Pending> inbox_;
  std::vector<uint64_t> cancels_;
  uint64_t next_handle_ = 1;
  uint64_t next_step_ = 1;
  // handle -> (pipeline, scheduler sequence id, stream)
  struct Live {
    Pipeline* pipeline = nullptr;
    uint64_t seq = 0;
    std::shared_ptr<RequestStream> stream;
  };
  std::map<uint64_t, Live> live_;
  std::atomic<int32_t> pipelines_up_{0};
  // Step sends of pipelines that went down, kept until UCX completes them.
  std::vector<std::unique_ptr<StepSends>> graveyard_;
  std::atomic<int64_t> queued_{0};
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_ENGINE_H_
