// Drives one pipeline replica: owns its scheduler, keeps up to S steps in
// flight for S stages (so every stage is busy), posts each StepPlan to every
// rank of stage 0 without waiting (a hung stage-0 worker never stalls the
// caller), reaps the sends, applies the StepResults that come back, times
// out steps that get none, and records per-stage step timings and the
// pipeline bubble.
//
// The driver never decides the replica's state on its own: it tells its
// caller (the dispatcher) when the replica must go down and why, and the
// dispatcher reports that to the fleet. Not thread-safe: the dispatcher's
// thread owns it.
#ifndef STRATA_ROUTER_PIPELINE_DRIVER_H_
#define STRATA_ROUTER_PIPELINE_DRIVER_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "router/boundary_balancer.h"
#include "router/fleet.h"
#include "router/request_stream.h"
#include "router/router_metrics.h"
#include "router/scheduler.h"
#include "router/step_watchdog.h"
#include "transport/transport.h"

namespace strata::router {

struct DriverOptions {
  std::chrono::milliseconds step_timeout{30000};
  // A step out longer than the watchdog allows (step_watchdog.h; its cap is
  // step_timeout) takes the pipeline down; floor 0 turns it off.
  std::chrono::milliseconds watchdog_floor{2000};
  double watchdog_factor = 8.0;
  SchedulerOptions scheduler;
  int32_t vocab_size = 0;  // token ids in results are checked against it (0: unchecked)
  // How often the bubble gauge is recomputed from the counters.
  std::chrono::milliseconds bubble_window{1000};
};

class PipelineDriver {
 public:
  using Clock = std::chrono::steady_clock;
  // `transport`, `next_step_id` (shared by every driver: step ids are unique
  // across replicas) and `metrics` (may be null) must outlive the driver.
  PipelineDriver(std::string name, transport::Transport* transport, uint64_t* next_step_id,
                 const DriverOptions& options, RouterMetrics* metrics);
  ~PipelineDriver();
  PipelineDriver(const PipelineDriver&) = delete;
  PipelineDriver& operator=(const PipelineDriver&) = delete;

  const std::string& name() const { return name_; }

  // Connects to stage 0 and posts a warm-up step of `warmup_token`. An
  // error (stage 0 unreachable, the post failed) leaves the driver down.
  absl::Status BringUp(const PipelinePlan& plan, int32_t warmup_token);
  bool up() const { return scheduler_ != nullptr; }
  bool warming() const { return warmup_step_ != 0; }

  // A sequence taken out of a replica that went down, to continue on
  // another (SequenceSpec::generated says how much of it was output).
  struct Migrant {
    SequenceSpec spec;
    RequestStream* stream = nullptr;
  };
  // Forgets every step (results that come back later are ignored) and every
  // sequence: into `migrants` when given, else each ends with UNAVAILABLE
  // ("pipeline NAME is down: why"). Returns the last step id issued so far
  // (the workers are told to drop them).
  uint64_t TakeDown(const std::string& why, std::vector<Migrant>* migrants = nullptr);
  // Every member's control address, from the plan it was brought up with.
  const std::vector<std::string>& control_addresses() const { return plan_.control; }

  // Requires up(). `stream` must live until it finished.
  uint64_t Add(SequenceSpec spec, RequestStream* stream);
  void Cancel(uint64_t seq_id);
  // Forgets a finished sequence's stream.
  void Forget(uint64_t seq_id) { streams_.erase(seq_id); }

  // One turn: a step in flight past the timeout or the watchdog's deadline
  // (DEADLINE_EXCEEDED), or a failed send (UNAVAILABLE), is the reason the
  // replica must go down; otherwise steps are scheduled while fewer than S
  // are in flight, and the answer is nullopt.
  std::optional<absl::Status> Tick(Clock::time_point now);

  enum class ResultOutcome {
    kNotMine,    // not a step of this replica (another's, or from before it went down)
    kWarmedUp,   // the warm-up step came back: up() now
    kApplied,    // tokens and finished sequences went to their streams
    kMustGoDown  // *why says why (a stage reported UNAVAILABLE, a failed warm-up)
  };
  ResultOutcome OnResult(const transport::StepResult& result, Clock::time_point now, std::string* why);

  // Replica choice for a sequence of `spec`: free KV blocks, less four per
  // waiting sequence, plus the blocks of its prefix this replica has cached
  // (a reused block needs no new block and no prefill). INT64_MIN when not
  // up.
  int64_t Score(const SequenceSpec& spec) const;
  // Blocks of `spec`'s prompt in this replica's prefix cache.
  int64_t CachedPrefixBlocks(const SequenceSpec& spec) const;
  int64_t cached_blocks() const { return scheduler_ ? scheduler_->blocks().cached_blocks() : 0; }
  int64_t waiting() const { return scheduler_ ? scheduler_->waiting() : 0; }
  int64_t running() const { return scheduler_ ? scheduler_->running() : 0; }
  int64_t used_blocks() const { return scheduler_ ? scheduler_->blocks().used_blocks() : 0; }
  int64_t num_blocks() const { return scheduler_ ? scheduler_->blocks().num_blocks() : 0; }
  int64_t block_size() const { return plan_.block_size; }
  size_t in_flight() const { return in_flight_.size(); }
  // The bubble ratio of the last full window (-1 before the first).
  double bubble() const { return last_bubble_; }

 private:
  struct StepSends;  // a StepPlan's bytes, alive until every rank's send completed

  absl::Status SendPlan(const transport::StepPlan& plan);
  absl::Status ReapSends();
  void RecordTimings(const transport::StepResult& result);
  // Bubble accounting: in-flight time since the last call, per-window gauge.
  void AccountInFlight(Clock::time_point now);
  absl::Status CheckTokens(const transport::StepResult& result) const;
  // The scheduler's prefix-cache counters since the last call, into metrics.
  void RecordPrefixCache();

  const std::string name_;
  transport::Transport* transport_;
  uint64_t* next_step_id_;
  const DriverOptions options_;
  RouterMetrics* metrics_;

  PipelinePlan plan_;
  std::vector<int> stage0_;  // transport peer ids of stage 0's ranks
  std::unique_ptr<Scheduler> scheduler_;
  uint64_t warmup_step_ = 0;
  uint64_t epoch_ = 0;  // this bring-up's pipeline epoch (router/pipeline_epoch.h)
  struct Out {
    Clock::time_point sent;
    int64_t rows = 0;
    StepShape shape{};  // for the balancer
    bool shifted = false;
  };
  std::map<uint64_t, Out> in_flight_;  // step id -> when it went, its rows
  // Where the boundaries go, when every stage holds the MLPs beside them
  // (PipelinePlan::movable_boundaries).
  std::unique_ptr<BoundaryBalancer> balancer_;
  StepWatchdog watchdog_;
  Clock::time_point last_result_;  // when the latest result of this bring-up came
  std::map<uint64_t, RequestStream*> streams_;       // scheduler sequence id -> stream
  std::map<uint64_t, std::unique_ptr<StepSends>> sending_;
  // Sends of steps that were forgotten (down), kept until UCX lets go.
  std::vector<std::unique_ptr<StepSends>> graveyard_;

  Clock::time_point accounted_{};  // in-flight time is counted up to here
  Clock::time_point window_start_{};
  double window_in_flight_ = 0;
  std::map<int32_t, double> window_busy_;  // stage -> seconds computing in the window
  double last_bubble_ = -1;
  // The scheduler's counters already recorded (it starts at 0 when the
  // replica comes up: a replica that went down lost its cache).
  uint64_t recorded_queries_ = 0, recorded_hits_ = 0, recorded_evictions_ = 0;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_PIPELINE_DRIVER_H_
