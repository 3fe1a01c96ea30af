// The router's request core: takes validated sequences from the front ends
// (an inbox), hands each to the replica with the most free KV blocks and the
// shortest queue, applies cancellations, and runs every replica's
// PipelineDriver on one thread of its own, which also receives the
// StepResults from the data plane. The fleet decides which replicas exist
// and their state; the dispatcher brings replicas up and down as the fleet
// and the drivers say.
//
// Thread-safe: Submit, Cancel and the read-outs may be called from any
// thread (gRPC handlers); they never wait on the dispatcher's loop. The
// loop itself does no blocking network I/O: a warm-up's connects to stage
// 0 and its data key's SetDataKey calls run on a KeyedRunner (one lane per
// replica), and their result is installed by the loop only while that
// warm-up is still the replica's current one (Fleet::Warming).
#ifndef STRATA_ROUTER_DISPATCHER_H_
#define STRATA_ROUTER_DISPATCHER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "router/fleet.h"
#include "router/keyed_runner.h"
#include "router/pipeline_driver.h"
#include "router/request_stream.h"
#include "router/router_metrics.h"
#include "router/worker_control.h"
#include "transport/transport.h"

namespace strata::router {

struct DispatcherOptions {
  std::string host = "127.0.0.1";  // data-plane address workers send results to
  int data_port = 0;
  bool ucx_peer_errors = true;
  SchedulerOptions scheduler;
  int64_t max_queue = 256;           // waiting requests beyond this: RESOURCE_EXHAUSTED
  int32_t max_tokens_limit = 4096;   // largest max_tokens a request may ask for
  int64_t max_prompt_tokens = 32768;
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds down_after{2000};  // no heartbeat this long: the pipeline is down
  std::chrono::milliseconds step_timeout{30000};
  // Sign the data plane (the control plane is mutual TLS): each warm-up of
  // a replica gets a fresh data key, sent to its members before any step.
  bool sign_data_plane = false;
  // A request moves to another replica at most this often (its replica
  // going down each time); one more, and it ends with UNAVAILABLE after
  // the tokens already sent.
  int32_t max_migrations = 3;
};

class Dispatcher {
 public:
  using Clock = std::chrono::steady_clock;
  // Takes the data plane and the control plane; `metrics` may be null and
  // must outlive the dispatcher. Starts the loop and the fleet's heartbeats.
  Dispatcher(const DispatcherOptions& options, RouterMetrics* metrics, std::unique_ptr<transport::Transport> transport,
             std::unique_ptr<WorkerControl> control);
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  Fleet& fleet() { return *fleet_; }
  const Fleet& fleet() const { return *fleet_; }
  std::string data_address() const { return transport_->address(); }
  const DispatcherOptions& options() const { return options_; }

  // Queues a validated sequence; returns its handle for Cancel. The stream
  // finishes with UNAVAILABLE when no replica is up (or the router drains).
  uint64_t Submit(SequenceSpec spec, std::shared_ptr<RequestStream> stream);
  void Cancel(uint64_t handle);

  bool Serving() const { return fleet_->pipelines_up() > 0 && !draining_; }
  // The smallest KV pool of the replicas that are up, in tokens (0: none).
  int64_t KvCapacityTokens() const { return kv_capacity_tokens_.load(); }
  int64_t queued() const { return queued_.load(); }

  // Stops taking requests; waits up to `budget` for running ones.
  void Drain(std::chrono::milliseconds budget);

 private:
  struct Pending {
    uint64_t handle;
    SequenceSpec spec;
    std::shared_ptr<RequestStream> stream;
  };
  struct Live {
    PipelineDriver* driver = nullptr;
    uint64_t seq = 0;
    std::shared_ptr<RequestStream> stream;
    // Set when it moved off a replica that went down, until its next
    // token (RouterMetrics::migration_resume); the first move's time.
    Clock::time_point migrated_at{};
    uint64_t tokens_at_migration = 0;
  };

  void Loop();
  // One turn of the loop (loop thread only).
  void Turn(std::chrono::steady_clock::time_point now);
  void Route(std::deque<Pending> inbox, std::vector<uint64_t> cancels);
  void BringUpReady();
  void TakeDown(PipelineDriver* driver, const std::string& why, DownCause cause);
  // What a warm-up needs that takes network I/O, made on the connector's
  // thread: stage 0's connections and, with sign_data_plane, a fresh data
  // key for the epoch, already given to every member.
  struct Prepared {
    PipelinePlan plan;
    absl::Status status;
    std::vector<std::pair<std::string, int>> peers;  // stage 0 address -> transport peer id
    std::optional<transport::DataKey> key;
  };
  // On the connector's thread: prepares `plan` and queues the result for the loop.
  void Prepare(PipelinePlan plan);
  // On the loop: a prepared warm-up still current starts (its key and
  // connections installed, the warm-up step posted); a stale one is dropped.
  void StartWarmUp(Prepared prepared);
  void DropDataKey(const std::string& pipeline);
  // The replica that is up with the best score for `spec`, other than
  // `except`.
  PipelineDriver* BestReplica(const SequenceSpec& spec, const PipelineDriver* except);
  // Requests of a replica that went down continue on another (prompt plus
  // the tokens already streamed; the client sees one stream), or end with
  // UNAVAILABLE when none is up.
  // Each moves max_migrations times at most.
  void Migrate(std::vector<PipelineDriver::Migrant> migrants, const PipelineDriver* from, const std::string& why,
               DownCause cause);
  // The time migrated requests waited for their next token, once it came.
  void RecordResumes();
  void HandleMessage(const transport::Message& m);
  void ForgetFinished();
  void UpdateGauges(int64_t inbox_size);
  PipelineDriver* Driver(const std::string& name);

  const DispatcherOptions options_;
  RouterMetrics* metrics_;
  std::unique_ptr<transport::Transport> transport_;
  // What the drivers see of transport_: Connect answers only with the
  // connections the connector made (never connects on the loop).
  std::unique_ptr<transport::Transport> driver_transport_;
  std::unique_ptr<WorkerControl> control_;
  std::map<std::string, uint64_t> data_keys_;  // the current epoch's key id of each replica (dispatcher thread)
  std::unique_ptr<Fleet> fleet_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> queued_{0};
  std::atomic<int64_t> kv_capacity_tokens_{0};
  std::atomic<int64_t> live_count_{0};

  std::unique_ptr<KeyedRunner> connector_;
  std::mutex prepared_mu_;
  std::vector<Prepared> prepared_ ABSL_GUARDED_BY(prepared_mu_);

  std::mutex inbox_mu_;  // guards the inbox and the cancels
  std::deque<Pending> inbox_;
  std::vector<uint64_t> cancels_;
  uint64_t next_handle_ = 1;

  // The loop thread's own state.
  uint64_t next_step_id_ = 1;
  std::map<std::string, std::unique_ptr<PipelineDriver>> drivers_;
  std::map<uint64_t, Live> live_;  // handle -> where the request runs
  std::thread loop_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_DISPATCHER_H_
