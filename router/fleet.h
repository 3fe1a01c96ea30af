// The fleet: which workers form which pipeline replica, checked against
// the model and the plan as they register; each replica's state machine
// (forming -> warming -> up, down, draining); heartbeats that mark a
// replica down when one member stops answering or restarts.
//
// The fleet owns every replica's state. The dispatcher's thread asks it for
// replicas ready to warm up, reports what its drivers learn (warm-up done,
// a step timed out), and takes the down events the fleet decided on.
// Thread-safe; no network I/O under its lock (probes run outside it).
#ifndef STRATA_ROUTER_FLEET_H_
#define STRATA_ROUTER_FLEET_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "model/stage_place.h"
#include "router/router_metrics.h"
#include "router/worker_control.h"
#include "strata/v1/inference.pb.h"
#include "strata/v1/worker.pb.h"

namespace strata::router {

enum class PipelineState { kForming, kWarming, kUp, kDown, kDraining };
const char* PipelineStateName(PipelineState state);

// Why a replica that was serving went down (a label of the router's
// migration metrics: RouterMetrics::MigrationReasons).
enum class DownCause {
  kDeadStage,       // a member's address refuses connections (no process)
  kRestartedStage,  // a member came back with another epoch
  kHungStage,       // a member has not answered heartbeats for down_after
  kStepTimeout,     // a step got no result in time (the driver's watchdog)
  kStepFailed,      // a step failed: a stage reported an error, a send failed
  kDrainingStage,   // a member is draining (its SIGTERM): down at the next heartbeat
};
const char* DownCauseLabel(DownCause cause);

// A replica the fleet took down itself.
struct DownEvent {
  std::string pipeline;
  std::string why;
  DownCause cause;
};

// What a driver needs to bring a replica up.
struct PipelinePlan {
  std::string name;
  int32_t num_stages = 0;
  int32_t tp_size = 0;
  int64_t num_blocks = 0;  // the smallest KV pool of its members
  int64_t block_size = 0;
  std::vector<std::string> stage0_data;  // data-plane address of stage 0, by rank
  std::vector<std::string> control;      // every member's control address
  uint64_t data_key_id = 0;              // the epoch's data key its plans are signed with (0: unsigned)
  uint64_t warm_up = 0;                  // which warm-up of the replica this is (Fleet::Warming)
  // Every member holds the MLP beside each of its boundaries (worker
  // --movable-boundaries): steps may move the boundaries (StepPlan::
  // shift_boundaries). False with one stage, or if any member does not.
  bool movable_boundaries = false;
};

struct FleetOptions {
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds down_after{2000};  // no heartbeat this long: down
  // This many consecutive heartbeats finding no process (connection
  // refused, or another epoch answering): down at once.
  int gone_after_probes = 1;
  // A replica whose warm-ups keep failing before their first step (stage 0
  // unreachable, a member refusing its key) is tried again after a
  // heartbeat, then twice as long after each further failure, up to this:
  // registrations that point at nothing do not keep the connector busy.
  std::chrono::milliseconds max_warm_up_backoff{30000};
};

class Fleet {
 public:
  using Clock = std::chrono::steady_clock;
  // `control` and `metrics` (may be null) must outlive the fleet.
  Fleet(const FleetOptions& options, WorkerControl* control, RouterMetrics* metrics);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // A worker joins (or rejoins) its pipeline. INVALID_ARGUMENT naming the
  // field for a malformed or misfitting registration, FAILED_PRECONDITION
  // for another model. A member that comes back with a new epoch takes its
  // replica down (a down event), and the replica warms up again.
  absl::Status Register(const v1::RegisterRequest& request);

  // The served model (from the first registration) with the plan of
  // stages; false until a worker registered.
  bool Model(v1::ModelInfo* info, int32_t* pipelines_up, int32_t* pipelines_total) const;
  const v1::ModelShape* shape_or_null() const;
  int32_t pipelines_up() const { return pipelines_up_.load(); }

  // Heartbeats on a thread of the fleet's own, every options.heartbeat.
  void StartHeartbeats();
  // One heartbeat round: probes every member at once (outside the lock),
  // then marks the members that answered alive and takes down the replicas
  // with a member silent for options.down_after. The heartbeat thread calls
  // it; tests call it directly.
  void Beat();

  // Complete, healthy replicas that are forming or down: each is moved to
  // warming and returned, for its driver to bring up.
  std::vector<PipelinePlan> TakeReadyToWarm();
  // Whether `warm_up` (PipelinePlan::warm_up) is still the replica's
  // current warm-up: work prepared for it off the dispatcher's thread
  // (connects, keys) is installed only then, and dropped when the replica
  // went down or began another warm-up meanwhile.
  bool Warming(const std::string& pipeline, uint64_t warm_up) const;
  // That warm-up failed: down, unless the replica moved on already; the
  // next one waits longer (FleetOptions::max_warm_up_backoff).
  void WarmUpFailed(const std::string& pipeline, uint64_t warm_up, const std::string& reason);
  // A replica's driver finished warming up / must go down (reason given).
  void MarkUp(const std::string& pipeline);
  void MarkDown(const std::string& pipeline, const std::string& reason);
  // Router drain: replicas that are up stop taking requests.
  void DrainAll();
  // Replicas the fleet took down itself (silent or restarted member) since
  // the last call: the dispatcher takes their drivers down.
  std::vector<DownEvent> TakeDownEvents();
  PipelineState state(const std::string& pipeline) const;
  std::string down_reason(const std::string& pipeline) const;

 private:
  struct Member {
    v1::RegisterRequest registration;
    model::StagePlace place;
    Clock::time_point last_ok;
    int gone_probes = 0;  // consecutive heartbeats that found no process
    bool draining = false;  // the last heartbeat found it draining
  };
  struct Replica {
    std::string name;
    int32_t num_stages = 0, tp_size = 0;
    int64_t block_size = 0;
    std::map<std::pair<int32_t, int32_t>, Member> members;  // (stage, rank)
    PipelineState state = PipelineState::kForming;
    std::string reason;
    Clock::time_point last_warm_up{};  // warm-ups are tried once per heartbeat at most
    uint64_t warm_ups = 0;             // the current warm-up's number
    int failed_warm_ups = 0;           // in a row, since the replica was last up
    bool Complete() const { return static_cast<int32_t>(members.size()) == num_stages * tp_size; }
  };

  absl::Status CheckModel(const v1::RegisterRequest& r);
  absl::Status CheckPlan(const Replica& p, const v1::RegisterRequest& r, const model::StagePlace& place) const;
  // With mu_ held.
  void SetState(Replica* p, PipelineState state, const std::string& reason);
  void HeartbeatLoop();

  const FleetOptions options_;
  WorkerControl* control_;
  RouterMetrics* metrics_;
  std::atomic<int32_t> pipelines_up_{0};
  std::atomic<bool> stop_{false};
  std::thread heartbeat_;

  mutable std::mutex mu_;  // guards everything below
  bool have_model_ = false;
  v1::ModelInfo model_;  // name and shape
  std::map<std::string, Replica> replicas_;
  std::vector<DownEvent> down_events_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_FLEET_H_
