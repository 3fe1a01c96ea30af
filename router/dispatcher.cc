#include "router/dispatcher.h"

#include <algorithm>
#include <iostream>

#include "absl/strings/str_cat.h"

namespace strata::router {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// Warm-ups prepared at once (each lane is one replica; a stage 0 that does
// not answer holds its lane for the transport's connect timeout).
constexpr int kConnectorThreads = 64;

// The drivers' view of the data plane: everything goes to the real
// transport except Connect, which answers from the connections the
// connector made (Install) and never opens one, so a driver's BringUp
// cannot block the dispatcher's loop.
class ConnectedPeers : public transport::Transport {
 public:
  explicit ConnectedPeers(transport::Transport* real) : real_(real) {}
  void Install(const std::string& address, int peer) {
    std::lock_guard<std::mutex> lock(mu_);
    peers_[address] = peer;
  }
  std::string address() const override { return real_->address(); }
  absl::StatusOr<int> Connect(const transport::HostPort& peer) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(peer.ToString());
    if (it == peers_.end()) return absl::UnavailableError(absl::StrCat(peer.ToString(), " is not connected yet"));
    return it->second;
  }
  void Disconnect(int peer) override { real_->Disconnect(peer); }
  absl::Status Send(int peer, const transport::WireHeader& header, const std::vector<transport::Bytes>& parts,
                    milliseconds timeout) override {
    return real_->Send(peer, header, parts, timeout);
  }
  absl::StatusOr<std::unique_ptr<transport::PendingSend>> SendAsync(
      int peer, const transport::WireHeader& header, const std::vector<transport::Bytes>& parts) override {
    return real_->SendAsync(peer, header, parts);
  }
  absl::Status Wait(transport::PendingSend* send, milliseconds timeout) override { return real_->Wait(send, timeout); }
  absl::StatusOr<transport::Message> Receive(milliseconds timeout) override { return real_->Receive(timeout); }
  void Recycle(transport::Message&& m) override { real_->Recycle(std::move(m)); }
  void Interrupt() override { real_->Interrupt(); }
  transport::TransportStats stats() const override { return real_->stats(); }
  void SetDataKey(const transport::DataKey& key) override { real_->SetDataKey(key); }
  void AddDataKey(const transport::DataKey& key) override { real_->AddDataKey(key); }
  void DropDataKey(uint64_t id) override { real_->DropDataKey(id); }

 private:
  transport::Transport* real_;
  std::mutex mu_;
  std::map<std::string, int> peers_;
};

}  // namespace

Dispatcher::Dispatcher(const DispatcherOptions& options, RouterMetrics* metrics,
                       std::unique_ptr<transport::Transport> transport, std::unique_ptr<WorkerControl> control)
    : options_(options), metrics_(metrics), transport_(std::move(transport)), control_(std::move(control)) {
  driver_transport_ = std::make_unique<ConnectedPeers>(transport_.get());
  connector_ = std::make_unique<KeyedRunner>(kConnectorThreads);
  FleetOptions fo;
  fo.heartbeat = options.heartbeat;
  fo.down_after = options.down_after;
  fleet_ = std::make_unique<Fleet>(fo, control_.get(), metrics);
  fleet_->StartHeartbeats();
  loop_ = std::thread([this] { Loop(); });
}

Dispatcher::~Dispatcher() {
  stop_ = true;
  transport_->Interrupt();
  if (loop_.joinable()) loop_.join();
  connector_.reset();  // waits for the connects and calls under way
  fleet_.reset();  // heartbeats stop before the control plane goes
  drivers_.clear();
  std::lock_guard<std::mutex> lock(inbox_mu_);
  for (Pending& p : inbox_) p.stream->Finished(Finish::kUnavailable, 0, 0, "the router is shutting down", {});
}

uint64_t Dispatcher::Submit(SequenceSpec spec, std::shared_ptr<RequestStream> stream) {
  std::lock_guard<std::mutex> lock(inbox_mu_);
  const uint64_t handle = next_handle_++;
  if (draining_) {
    stream->Finished(Finish::kUnavailable, 0, 0, "the router is draining", {});
    return handle;
  }
  inbox_.push_back({handle, std::move(spec), std::move(stream)});
  queued_++;
  live_count_++;
  transport_->Interrupt();
  return handle;
}

void Dispatcher::Cancel(uint64_t handle) {
  std::lock_guard<std::mutex> lock(inbox_mu_);
  cancels_.push_back(handle);
  transport_->Interrupt();
}

PipelineDriver* Dispatcher::Driver(const std::string& name) {
  auto& d = drivers_[name];
  if (!d) {
    DriverOptions o;
    o.step_timeout = options_.step_timeout;
    o.scheduler = options_.scheduler;
    const v1::ModelShape* shape = fleet_->shape_or_null();
    o.vocab_size = shape ? static_cast<int32_t>(shape->vocab_size()) : 0;
    if (shape) {
      o.scheduler.attention_context =
          ChunkingContext(shape->hidden_size(), shape->intermediate_size(), shape->num_attention_heads(),
                          shape->num_key_value_heads(), shape->head_dim());
    }
    v1::ModelInfo model;
    int32_t up = 0, total = 0;
    if (fleet_->Model(&model, &up, &total)) o.scheduler.model = model.name();
    d = std::make_unique<PipelineDriver>(name, driver_transport_.get(), &next_step_id_, o, metrics_);
  }
  return d.get();
}

void Dispatcher::TakeDown(PipelineDriver* driver, const std::string& why, DownCause cause) {
  fleet_->MarkDown(driver->name(), why);
  DropDataKey(driver->name());  // what its epoch still sends is stale
  // Steps still travelling are ignored when they come back; the workers
  // drop the queued ones on Abort (every step issued so far; later steps,
  // such as the next warm-up, run).
  std::vector<PipelineDriver::Migrant> migrants;
  const uint64_t last_issued = driver->TakeDown(why, &migrants);
  control_->AbortAll(driver->control_addresses(), last_issued);
  Migrate(std::move(migrants), driver, why, cause);
}

PipelineDriver* Dispatcher::BestReplica(const SequenceSpec& spec, const PipelineDriver* except) {
  PipelineDriver* best = nullptr;
  int64_t best_score = INT64_MIN;
  for (auto& [name, d] : drivers_) {
    if (d.get() == except || !d->up() || fleet_->state(name) != PipelineState::kUp) continue;
    const int64_t score = d->Score(spec);
    if (best == nullptr || score > best_score) {
      best = d.get();
      best_score = score;
    }
  }
  return best;
}

void Dispatcher::Migrate(std::vector<PipelineDriver::Migrant> migrants, const PipelineDriver* from,
                         const std::string& why, DownCause cause) {
  if (migrants.empty()) return;
  const auto now = Clock::now();
  std::map<const RequestStream*, Live*> by_stream;
  for (auto& [handle, live] : live_) by_stream[live.stream.get()] = &live;
  std::map<std::string, int> moved;  // to which replica, how many
  for (PipelineDriver::Migrant& m : migrants) {
    const int32_t prompt = static_cast<int32_t>(m.spec.prompt.size()) - m.spec.generated;
    auto it = by_stream.find(m.stream);
    if (m.spec.migrations >= options_.max_migrations) {
      if (metrics_) metrics_->MigrationsFailed("limit").Increment();  // before the stream ends: a reader may look
      m.stream->Finished(Finish::kUnavailable, prompt, m.spec.generated,
                         absl::StrCat("pipeline ", from->name(), " is down: ", why, "; the request moved ",
                                      m.spec.migrations, " times already (--max-migrations)"),
                         {});
      continue;
    }
    PipelineDriver* to = BestReplica(m.spec, from);
    if (to == nullptr || it == by_stream.end()) {
      if (metrics_) metrics_->MigrationsFailed("no_replica").Increment();
      m.stream->Finished(Finish::kUnavailable, prompt, m.spec.generated,
                         absl::StrCat("pipeline ", from->name(), " is down: ", why, "; no other pipeline is up"), {});
      continue;
    }
    Live& live = *it->second;
    m.spec.migrations++;
    live.driver = to;
    live.seq = to->Add(std::move(m.spec), m.stream);
    if (live.migrated_at == Clock::time_point()) {
      live.migrated_at = now;
      live.tokens_at_migration = live.stream->tokens();
    }
    moved[to->name()]++;
    if (metrics_) metrics_->Migrated(DownCauseLabel(cause)).Increment();
  }
  for (const auto& [name, n] : moved) {
    std::cerr << "strata-router: " << n << " request(s) of pipeline " << from->name() << " continue on " << name
              << std::endl;
  }
}

void Dispatcher::RecordResumes() {
  for (auto& [handle, live] : live_) {
    if (live.migrated_at == Clock::time_point() || live.stream->tokens() <= live.tokens_at_migration) continue;
    if (metrics_) {
      metrics_->migration_resume->Observe(
          std::chrono::duration<double>(live.stream->last_token_at() - live.migrated_at).count());
    }
    live.migrated_at = Clock::time_point();
  }
}

void Dispatcher::BringUpReady() {
  for (const DownEvent& e : fleet_->TakeDownEvents()) {
    auto it = drivers_.find(e.pipeline);
    if (it != drivers_.end()) TakeDown(it->second.get(), e.why, e.cause);
  }
  for (PipelinePlan& plan : fleet_->TakeReadyToWarm()) {
    const std::string name = plan.name;
    connector_->Post(name, [this, plan = std::move(plan)]() mutable { Prepare(std::move(plan)); });
  }
  std::vector<Prepared> prepared;
  {
    std::lock_guard<std::mutex> lock(prepared_mu_);
    prepared.swap(prepared_);
  }
  for (Prepared& p : prepared) StartWarmUp(std::move(p));
}

// The connector's thread: whatever blocks (a stage 0 that does not
// answer, a member slow to take its key) blocks this replica's lane only.
void Dispatcher::Prepare(PipelinePlan plan) {
  Prepared p;
  for (size_t r = 0; r < plan.stage0_data.size() && p.status.ok(); ++r) {
    auto hp = transport::ParseHostPort(plan.stage0_data[r], "stage 0");
    auto peer = hp.ok() ? transport_->Connect(*hp) : hp.status();
    if (!peer.ok()) {
      p.status = absl::UnavailableError(absl::StrCat("cannot reach stage 0 rank ", r, ": ", peer.status().message()));
    } else {
      p.peers.emplace_back(hp->ToString(), *peer);
    }
  }
  // A pipeline epoch begins: a fresh key, sent to every member over the
  // control plane before its first step, known to the router's data plane
  // once the loop installs it.
  if (p.status.ok() && options_.sign_data_plane) {
    const transport::DataKey key = transport::NewDataKey();
    const std::string bytes(key.bytes.begin(), key.bytes.end());
    p.status = control_->SetDataKeyAll(plan.control, key.id, bytes, milliseconds(2000));
    if (p.status.ok()) p.key = key;
  }
  p.plan = std::move(plan);
  {
    std::lock_guard<std::mutex> lock(prepared_mu_);
    prepared_.push_back(std::move(p));
  }
  transport_->Interrupt();
}

void Dispatcher::StartWarmUp(Prepared p) {
  PipelinePlan& plan = p.plan;
  if (!fleet_->Warming(plan.name, plan.warm_up)) {
    std::cerr << "strata-router: dropped a stale warm-up of pipeline " << plan.name << std::endl;
    return;  // it went down or warms up again meanwhile; its key was never installed
  }
  if (!p.status.ok()) {
    fleet_->WarmUpFailed(plan.name, plan.warm_up, std::string(p.status.message()));
    return;
  }
  if (p.key) {
    DropDataKey(plan.name);
    transport_->AddDataKey(*p.key);
    data_keys_[plan.name] = p.key->id;
    plan.data_key_id = p.key->id;
  }
  for (const auto& [address, peer] : p.peers) static_cast<ConnectedPeers*>(driver_transport_.get())->Install(address, peer);
  const v1::ModelShape* shape = fleet_->shape_or_null();
  const int64_t vocab = shape ? shape->vocab_size() : 1;
  const int32_t token =
      static_cast<int32_t>(std::clamp<int64_t>(shape ? shape->bos_token_id() : 0, 0, std::max<int64_t>(vocab - 1, 0)));
  PipelineDriver* d = Driver(plan.name);
  if (absl::Status s = d->BringUp(plan, token); !s.ok()) {
    fleet_->WarmUpFailed(plan.name, plan.warm_up, std::string(s.message()));
  }
}

void Dispatcher::DropDataKey(const std::string& pipeline) {
  auto it = data_keys_.find(pipeline);
  if (it == data_keys_.end()) return;
  transport_->DropDataKey(it->second);
  data_keys_.erase(it);
}

// New requests go to the replica that is up with the best score.
void Dispatcher::Route(std::deque<Pending> inbox, std::vector<uint64_t> cancels) {
  for (Pending& req : inbox) {
    queued_--;
    PipelineDriver* best = BestReplica(req.spec, nullptr);
    if (best == nullptr) {
      req.stream->Finished(Finish::kUnavailable, 0, 0, "no pipeline is serving", {});
      live_count_--;
      continue;
    }
    const uint64_t seq = best->Add(std::move(req.spec), req.stream.get());
    live_[req.handle] = Live{best, seq, req.stream};
  }
  for (uint64_t handle : cancels) {
    auto it = live_.find(handle);
    if (it != live_.end()) it->second.driver->Cancel(it->second.seq);
  }
}

void Dispatcher::HandleMessage(const transport::Message& m) {
  absl::StatusOr<transport::StepResult> r =
      m.header.type == static_cast<uint16_t>(transport::MessageType::kStepResult)
          ? transport::DecodeResult(m.payload(), m.header.payload_bytes)
          : absl::InvalidArgumentError(absl::StrCat("a ", transport::MessageTypeName(
                                                              static_cast<transport::MessageType>(m.header.type)),
                                                    " message is not a result"));
  if (!r.ok()) {
    if (metrics_) metrics_->malformed_results->Increment();
    std::cerr << "strata-router: dropped a malformed result: " << r.status() << std::endl;
    return;
  }
  const auto now = Clock::now();
  for (auto& [name, d] : drivers_) {
    std::string why;
    switch (d->OnResult(*r, now, &why)) {
      case PipelineDriver::ResultOutcome::kNotMine:
        continue;
      case PipelineDriver::ResultOutcome::kWarmedUp:
        fleet_->MarkUp(name);
        return;
      case PipelineDriver::ResultOutcome::kApplied:
        return;
      case PipelineDriver::ResultOutcome::kMustGoDown:
        TakeDown(d.get(), why, DownCause::kStepFailed);
        return;
    }
  }
}

void Dispatcher::ForgetFinished() {
  for (auto it = live_.begin(); it != live_.end();) {
    if (it->second.stream->finished()) {
      it->second.driver->Forget(it->second.seq);
      it = live_.erase(it);
      live_count_--;
    } else {
      ++it;
    }
  }
}

void Dispatcher::UpdateGauges(int64_t inbox_size) {
  int64_t waiting = inbox_size, running = 0, used = 0, total = 0, capacity = 0;
  for (auto& [name, d] : drivers_) {
    if (metrics_) {
      // A replica that is down has no capacity: its driver reports zeros.
      const RouterMetrics::PipelineSeries p = metrics_->Pipeline(name);
      p.kv_used_blocks->Set(static_cast<double>(d->used_blocks()));
      p.kv_capacity_blocks->Set(static_cast<double>(d->num_blocks()));
      p.kv_used_tokens->Set(static_cast<double>(d->used_blocks() * d->block_size()));
      p.kv_capacity_tokens->Set(static_cast<double>(d->num_blocks() * d->block_size()));
      p.running->Set(static_cast<double>(d->running()));
      p.prefix_cached_blocks->Set(static_cast<double>(d->cached_blocks()));
    }
    if (!d->up()) continue;
    waiting += d->waiting();
    running += d->running();
    used += d->used_blocks();
    total += d->num_blocks();
    const int64_t tokens = d->num_blocks() * d->block_size();
    capacity = capacity == 0 ? tokens : std::min(capacity, tokens);
  }
  queued_ = waiting;
  kv_capacity_tokens_ = capacity;
  if (metrics_) {
    metrics_->queue_depth->Set(static_cast<double>(waiting));
    metrics_->running->Set(static_cast<double>(running));
    metrics_->kv_usage->Set(total > 0 ? static_cast<double>(used) / static_cast<double>(total) : 0.0);
  }
}

void Dispatcher::Turn(Clock::time_point now) {
  std::deque<Pending> inbox;
  std::vector<uint64_t> cancels;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    inbox.swap(inbox_);
    cancels.swap(cancels_);
  }
  BringUpReady();
  Route(std::move(inbox), std::move(cancels));
  for (auto& [name, d] : drivers_) {
    if (!d->up() && !d->warming()) continue;
    // A step out too long (DEADLINE_EXCEEDED), or a failed send.
    if (auto why = d->Tick(now)) {
      TakeDown(d.get(), std::string(why->message()),
               why->code() == absl::StatusCode::kDeadlineExceeded ? DownCause::kStepTimeout : DownCause::kStepFailed);
    }
  }
  RecordResumes();
  ForgetFinished();
  UpdateGauges(0);
}

void Dispatcher::Loop() {
  while (!stop_) {
    Turn(Clock::now());
    auto m = transport_->Receive(milliseconds(20));
    if (m.ok()) {
      HandleMessage(*m);
      transport_->Recycle(std::move(*m));
    }
  }
}

void Dispatcher::Drain(milliseconds budget) {
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    draining_ = true;
  }
  fleet_->DrainAll();
  const auto deadline = Clock::now() + budget;
  while (Clock::now() < deadline && live_count_.load() > 0) std::this_thread::sleep_for(milliseconds(20));
}

}  // namespace strata::router
