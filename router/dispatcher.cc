#include "router/dispatcher.h"

#include <algorithm>
#include <iostream>

#include "absl/strings/str_cat.h"

namespace strata::router {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

Dispatcher::Dispatcher(const DispatcherOptions& options, RouterMetrics* metrics,
                       std::unique_ptr<transport::Transport> transport, std::unique_ptr<WorkerControl> control)
    : options_(options), metrics_(metrics), transport_(std::move(transport)), control_(std::move(control)) {
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
    v1::ModelInfo model;
    int32_t up = 0, total = 0;
    if (fleet_->Model(&model, &up, &total)) o.scheduler.model = model.name();
    d = std::make_unique<PipelineDriver>(name, transport_.get(), &next_step_id_, o, metrics_);
  }
  return d.get();
}

void Dispatcher::TakeDown(PipelineDriver* driver, const std::string& why) {
  fleet_->MarkDown(driver->name(), why);
  DropDataKey(driver->name());  // what its epoch still sends is stale
  // Steps still travelling are ignored when they come back; the workers
  // drop the queued ones on Abort (every step issued so far; later steps,
  // such as the next warm-up, run).
  std::vector<PipelineDriver::Migrant> migrants;
  const uint64_t last_issued = driver->TakeDown(why, &migrants);
  control_->AbortAll(driver->control_addresses(), last_issued);
  Migrate(std::move(migrants), driver, why);
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
                         const std::string& why) {
  if (migrants.empty()) return;
  std::map<const RequestStream*, Live*> by_stream;
  for (auto& [handle, live] : live_) by_stream[live.stream.get()] = &live;
  PipelineDriver* to = nullptr;
  for (PipelineDriver::Migrant& m : migrants) {
    to = BestReplica(m.spec, from);
    auto it = by_stream.find(m.stream);
    if (to == nullptr || it == by_stream.end()) {
      const int32_t prompt = static_cast<int32_t>(m.spec.prompt.size()) - m.spec.generated;
      m.stream->Finished(Finish::kUnavailable, prompt, m.spec.generated,
                         absl::StrCat("pipeline ", from->name(), " is down: ", why, "; no other pipeline is up"), {});
      continue;
    }
    it->second->driver = to;
    it->second->seq = to->Add(std::move(m.spec), m.stream);
    if (metrics_) metrics_->migrated->Increment();
  }
  if (to != nullptr) {
    std::cerr << "strata-router: " << migrants.size() << " request(s) of pipeline " << from->name()
              << " continue on " << to->name() << std::endl;
  }
}

void Dispatcher::BringUpReady() {
  for (const auto& [name, why] : fleet_->TakeDownEvents()) {
    auto it = drivers_.find(name);
    if (it != drivers_.end()) TakeDown(it->second.get(), why);
  }
  for (const PipelinePlan& plan : fleet_->TakeReadyToWarm()) {
    const v1::ModelShape* shape = fleet_->shape_or_null();
    const int64_t vocab = shape ? shape->vocab_size() : 1;
    const int32_t token =
        static_cast<int32_t>(std::clamp<int64_t>(shape ? shape->bos_token_id() : 0, 0, std::max<int64_t>(vocab - 1, 0)));
    PipelinePlan keyed = plan;
    if (absl::Status s = NewDataKey(&keyed); !s.ok()) {
      fleet_->MarkDown(plan.name, std::string(s.message()));
      continue;
    }
    PipelineDriver* d = Driver(plan.name);
    if (absl::Status s = d->BringUp(keyed, token); !s.ok()) fleet_->MarkDown(plan.name, std::string(s.message()));
  }
}

// A pipeline epoch begins: a fresh key, known to the router's data plane
// and sent to every member over the control plane before its first step.
absl::Status Dispatcher::NewDataKey(PipelinePlan* plan) {
  if (!options_.sign_data_plane) return absl::OkStatus();
  DropDataKey(plan->name);
  const transport::DataKey key = transport::NewDataKey();
  transport_->AddDataKey(key);
  data_keys_[plan->name] = key.id;
  const std::string bytes(key.bytes.begin(), key.bytes.end());
  if (absl::Status s = control_->SetDataKeyAll(plan->control, key.id, bytes, std::chrono::milliseconds(2000));
      !s.ok()) {
    DropDataKey(plan->name);
    return s;
  }
  plan->data_key_id = key.id;
  return absl::OkStatus();
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
        TakeDown(d.get(), why);
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
    if (auto why = d->Tick(now)) TakeDown(d.get(), *why);
  }
  ForgetFinished();
  UpdateGauges(0);
}

void Dispatcher::Loop() {
  while (!stop_) {
    Turn(Clock::now());
    auto m = transport_->Receive(milliseconds(20));
    if (m.ok()) HandleMessage(*m);
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
