// A worker's data plane: one thread receives each step (a StepPlan on
// stage 0, Activations elsewhere), drops the aborted ones, runs it with the
// StepRunner, and sends on what it produced: activations to the same rank of
// the next stage (asynchronously, so step n travels while n+1 computes), or,
// on the last stage's rank 0, the StepResult to the router. A step that
// fails becomes a StepResult with the failure's status code, sent by rank 0
// of the stage. Each step carries this stage's timing (queue, compute,
// all-reduce, send) on to the router, and the same timings feed the
// worker's metrics.
//
// Pipeline epochs: every step carries the epoch the router gave its
// pipeline when it last brought it up (WireHeader::epoch), and each stage
// passes it on. The first step of a newer epoch makes this worker drop its
// data-plane connections (the processes behind them may have been replaced)
// and re-form its tensor-parallel group, at that step, on every rank; a step
// of an older epoch is stale and dropped. A worker that registers takes no
// step before the router answered (what arrives earlier is an earlier
// router epoch's), nor one older than the floor the router named then.
// Aborts drop queued steps only on a stage of one rank: ranks apply them at
// different moments, and a step one rank drops and another runs would
// split the group's collectives.
#ifndef STRATA_WORKER_DATA_LOOP_H_
#define STRATA_WORKER_DATA_LOOP_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "model/stage_place.h"
#include "transport/transport.h"
#include "worker/abort_list.h"
#include "worker/step_runner.h"
#include "worker/tp_group.h"
#include "worker/worker_metrics.h"

namespace strata::worker {

struct DataLoopOptions {
  std::string pipeline;
  bool await_registration = false;  // take no step before SetEpochFloor
  std::string next_stage;      // HOST:PORT of the next stage's same rank (not the last stage)
  std::string result_address;  // HOST:PORT results go to (else set later, from the router)
  std::chrono::milliseconds step_timeout{30000};  // a send that takes longer fails its step
  std::string log_prefix;
};

class DataLoop {
 public:
  using Clock = std::chrono::steady_clock;
  // Everything passed must outlive the loop; `group` may be null for one rank.
  DataLoop(const model::StagePlace& place, const DataLoopOptions& options, transport::Transport* transport,
           StepRunner* runner, const AbortList* aborts, WorkerMetrics* metrics, TpGroup* group);
  ~DataLoop();
  DataLoop(const DataLoop&) = delete;
  DataLoop& operator=(const DataLoop&) = delete;

  void Start();
  // Finishes the send in flight and joins the thread.
  void Stop();

  // Where results go (the router's answer at registration); thread-safe.
  void SetResultAddress(const std::string& address);
  // When the last message arrived (drain waits for quiet); thread-safe.
  Clock::time_point last_message() const;
  // Drops the connections to the next stage and the router before the next
  // step (thread-safe): the pipeline went down, and the processes at those
  // addresses may have been replaced.
  void Reconnect() { reconnect_ = true; }
  // The registration's answer: steps of pipeline epochs below `floor` are
  // stale (thread-safe).
  void SetEpochFloor(uint64_t floor);

 private:
  // The activations of the latest step, still travelling to the next stage
  // while this worker computes the next step.
  struct InFlight {
    std::unique_ptr<transport::PendingSend> send;
    transport::MessageBytes buffer;
    uint64_t step_id = 0;
  };

  void Run();
  void DropConnections();
  void Handle(const transport::Message& m);
  // Whether `m` runs: false for a stale epoch's step (counted); a newer
  // epoch begins here first.
  bool InEpoch(const transport::Message& m);
  void Forward(StepOutput& out, transport::StageTiming timing);
  void FinishInFlight();
  void StepFailed(uint64_t step_id, const absl::Status& status);
  void SendResult(transport::StepResult& result);
  void ObservePhases(const transport::StageTiming& t);
  absl::StatusOr<int> Peer(const std::string& address, int* cached);
  transport::WireHeader Header(transport::MessageType type, uint64_t step_id) const;

  const model::StagePlace place_;
  const DataLoopOptions options_;
  transport::Transport* transport_;
  StepRunner* runner_;
  const AbortList* aborts_;
  WorkerMetrics* metrics_;
  TpGroup* group_;
  TimedCommunicator* comm_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> reconnect_{false};
  std::thread thread_;
  uint64_t rejected_seen_ = 0;
  std::unique_ptr<InFlight> in_flight_;  // the loop thread's
  int next_peer_ = -1, result_peer_ = -1;  // the loop thread's
  std::string result_peer_address_;        // what result_peer_ is connected to
  bool in_epoch_ = false;                  // the loop thread's: epoch_ is set
  uint64_t epoch_ = 0;                     // the pipeline epoch in force
  uint64_t epoch_registration_ = 0;        // registrations_ when epoch_ began
  std::atomic<uint64_t> registrations_{0};  // SetEpochFloor calls
  std::atomic<uint64_t> floor_{0};

  mutable std::mutex mu_;  // guards the two below
  std::string result_address_;
  Clock::time_point last_message_ = Clock::now();
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_DATA_LOOP_H_
