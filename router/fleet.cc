#include "router/fleet.h"

#include <algorithm>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "transport/address.h"

namespace strata::router {
namespace {

// A registration's KV pool is allocated by the router's block manager:
// bounded before use (a peer's numbers are untrusted).
constexpr int64_t kMaxKvBlocks = int64_t{1} << 24;
constexpr int64_t kMaxBlockSize = 4096;

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

absl::Status CheckIdentity(const v1::RegisterRequest& r) {
  const v1::WorkerIdentity& id = r.identity();
  const v1::ModelShape& shape = r.shape();
  if (id.pipeline().empty() || id.pipeline().size() > 64) return Invalid("identity.pipeline must be 1 to 64 characters");
  if (id.num_stages() < 1 || id.num_stages() > model::kMaxStages) {
    return Invalid(absl::StrCat("identity.num_stages must be in [1, ", model::kMaxStages, "]"));
  }
  if (id.stage() < 0 || id.stage() >= id.num_stages()) {
    return Invalid(absl::StrCat("identity.stage ", id.stage(), " is outside [0, ", id.num_stages(), ")"));
  }
  if (id.tp_size() < 1 || id.tp_size() > model::kMaxTpSize) {
    return Invalid(absl::StrCat("identity.tp_size must be in [1, ", model::kMaxTpSize, "]"));
  }
  if (id.tp_rank() < 0 || id.tp_rank() >= id.tp_size()) {
    return Invalid(absl::StrCat("identity.tp_rank ", id.tp_rank(), " is outside [0, ", id.tp_size(), ")"));
  }
  if (shape.num_layers() < 1 || shape.vocab_size() < 1 || shape.hidden_size() < 1) {
    return Invalid("shape: num_layers, vocab_size and hidden_size must be positive");
  }
  if (id.first_layer() < 0 || id.first_layer() >= id.last_layer() || id.last_layer() > shape.num_layers()) {
    return Invalid(absl::StrCat("identity layers [", id.first_layer(), ", ", id.last_layer(), ") are not inside [0, ",
                                shape.num_layers(), ")"));
  }
  if (id.has_embedding() != (id.stage() == 0) || id.has_lm_head() != (id.stage() + 1 == id.num_stages())) {
    return Invalid("identity: the embedding belongs to stage 0 and the lm_head to the last stage");
  }
  if (r.kv_num_blocks() < 1 || r.kv_num_blocks() > kMaxKvBlocks || r.kv_block_size() < 1 ||
      r.kv_block_size() > kMaxBlockSize) {
    return Invalid(absl::StrCat("kv_num_blocks must be in [1, ", kMaxKvBlocks, "] and kv_block_size in [1, ",
                                kMaxBlockSize, "]"));
  }
  for (const std::string* a : {&r.data_address(), &r.control_address()}) {
    if (!transport::ParseHostPort(*a, "address").ok()) return Invalid(absl::StrCat("address \"", *a, "\" is not HOST:PORT"));
  }
  return absl::OkStatus();
}

}  // namespace

const char* PipelineStateName(PipelineState state) {
  switch (state) {
    case PipelineState::kForming:
      return "forming";
    case PipelineState::kWarming:
      return "warming";
    case PipelineState::kUp:
      return "up";
    case PipelineState::kDown:
      return "down";
    case PipelineState::kDraining:
      return "draining";
  }
  return "unknown";
}

const char* DownCauseLabel(DownCause cause) {
  switch (cause) {
    case DownCause::kDeadStage:
      return "dead_stage";
    case DownCause::kRestartedStage:
      return "restarted_stage";
    case DownCause::kHungStage:
      return "hung_stage";
    case DownCause::kStepTimeout:
      return "step_timeout";
    case DownCause::kStepFailed:
      return "step_failed";
    case DownCause::kDrainingStage:
      return "draining_stage";
  }
  return "step_failed";
}

Fleet::Fleet(const FleetOptions& options, WorkerControl* control, RouterMetrics* metrics)
    : options_(options), control_(control), metrics_(metrics) {}

Fleet::~Fleet() {
  stop_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
}

absl::Status Fleet::CheckModel(const v1::RegisterRequest& r) {
  if (!have_model_) {
    model_.set_name(r.model_name());
    *model_.mutable_shape() = r.shape();
    have_model_ = true;
  } else if (r.model_name() != model_.name()) {
    return absl::FailedPreconditionError(
        absl::StrCat("this router serves model \"", model_.name(), "\"; the worker holds \"", r.model_name(), "\""));
  } else if (!google::protobuf::util::MessageDifferencer::Equals(r.shape(), model_.shape())) {
    return absl::FailedPreconditionError("the worker's model shape differs from the served model's");
  }
  return absl::OkStatus();
}

// Layer ranges: the same on every rank of a stage, adjacent across stages,
// from 0 to num_layers: the model exactly once.
absl::Status Fleet::CheckPlan(const Replica& p, const v1::RegisterRequest& r, const model::StagePlace& place) const {
  if (place.num_stages() != p.num_stages) {
    return Invalid(absl::StrCat("pipeline ", p.name, " has ", p.num_stages, " stages; this worker says ",
                                place.num_stages()));
  }
  if (place.tp_size() != p.tp_size) {
    return Invalid(absl::StrCat("pipeline ", p.name, " has tp_size ", p.tp_size, "; this worker says ", place.tp_size()));
  }
  if (r.kv_block_size() != p.block_size) {
    return Invalid(absl::StrCat("pipeline ", p.name, " has KV blocks of ", p.block_size, " tokens; this worker has ",
                                r.kv_block_size()));
  }
  for (const auto& [key, m] : p.members) {
    if (key.first == place.stage() && key.second != place.tp_rank()) {
      if (absl::Status s = place.CheckSameStage(m.place); !s.ok()) return s;
    }
    if (key.first == place.stage() - 1) {
      if (absl::Status s = m.place.CheckFollowedBy(place); !s.ok()) return s;
    }
    if (key.first == place.stage() + 1) {
      if (absl::Status s = place.CheckFollowedBy(m.place); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Fleet::Register(const v1::RegisterRequest& r) {
  if (absl::Status s = CheckIdentity(r); !s.ok()) return s;
  const v1::WorkerIdentity& id = r.identity();
  auto place = model::StagePlace::CreateHalves(id.stage(), id.num_stages(), id.tp_rank(), id.tp_size(),
                                               r.shape().num_layers(), 2 * id.first_layer() + id.starts_at_mlp(),
                                               2 * id.last_layer() - id.ends_after_attention());
  if (!place.ok()) return place.status();

  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckModel(r); !s.ok()) return s;
  auto [it, created] = replicas_.try_emplace(id.pipeline());
  Replica& p = it->second;
  if (created) {
    p.name = id.pipeline();
    p.num_stages = id.num_stages();
    p.tp_size = id.tp_size();
    p.block_size = r.kv_block_size();
    if (metrics_) metrics_->PipelineUp(p.name).Set(0);
  }
  if (absl::Status s = CheckPlan(p, r, *place); !s.ok()) return s;
  const auto key = std::make_pair(id.stage(), id.tp_rank());
  auto existing = p.members.find(key);
  if (existing != p.members.end() && existing->second.registration.epoch() != r.epoch() &&
      p.state != PipelineState::kForming) {
    const std::string why = absl::StrCat("stage ", id.stage(), " rank ", id.tp_rank(), " restarted (new epoch)");
    SetState(&p, PipelineState::kDown, why);
    down_events_.push_back({p.name, why, DownCause::kRestartedStage});
  }
  if (existing == p.members.end() || existing->second.registration.epoch() != r.epoch()) {
    // A new process at that address: probes must not wait out the reconnect
    // backoff of the channel to the one before it.
    if (existing != p.members.end() && existing->second.registration.control_address() != r.control_address()) {
      control_->Forget(existing->second.registration.control_address());
    }
    control_->Forget(r.control_address());
  }
  p.members.insert_or_assign(key, Member{r, *place, Clock::now()});
  std::cerr << "strata-router: registered " << p.name << " " << place->Describe() << ", " << r.kv_num_blocks()
            << " KV blocks, data " << r.data_address() << std::endl;
  return absl::OkStatus();
}

void Fleet::SetState(Replica* p, PipelineState state, const std::string& reason) {
  if (p->state == state && p->reason == reason) return;
  const bool was_up = p->state == PipelineState::kUp;
  const bool is_up = state == PipelineState::kUp;
  p->state = state;
  p->reason = reason;
  if (was_up != is_up) pipelines_up_ += is_up ? 1 : -1;
  if (metrics_) metrics_->PipelineUp(p->name).Set(is_up ? 1 : 0);
  if (state == PipelineState::kDown) {
    std::cerr << "strata-router: pipeline " << p->name << " is down: " << reason << std::endl;
  }
}

bool Fleet::Model(v1::ModelInfo* info, int32_t* up, int32_t* total) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!have_model_) return false;
  *info = model_;
  info->clear_stages();
  *up = pipelines_up_.load();
  *total = static_cast<int32_t>(replicas_.size());
  // The plan of stages, from the first replica with members.
  for (const auto& [name, p] : replicas_) {
    for (int32_t s = 0; s < p.num_stages; ++s) {
      auto it = p.members.find({s, 0});
      if (it == p.members.end()) continue;
      const model::StagePlace& place = it->second.place;
      v1::StagePlan* sp = info->add_stages();
      sp->set_stage(s);
      sp->set_first_layer(place.first_layer());
      sp->set_last_layer(place.last_layer());
      sp->set_tp_size(p.tp_size);
      sp->set_has_embedding(place.has_embedding());
      sp->set_has_lm_head(place.has_lm_head());
      sp->set_starts_at_mlp(place.starts_at_mlp());
      sp->set_ends_after_attention(place.ends_after_attention());
      sp->set_movable_boundaries(it->second.registration.identity().movable_boundaries());
    }
    break;
  }
  return true;
}

const v1::ModelShape* Fleet::shape_or_null() const {
  std::lock_guard<std::mutex> lock(mu_);
  return have_model_ ? &model_.shape() : nullptr;  // fixed once set
}

void Fleet::StartHeartbeats() {
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
}

void Fleet::HeartbeatLoop() {
  while (!stop_) {
    Beat();
    for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(options_.heartbeat / 10);
  }
}

void Fleet::Beat() {
  struct Slot {
    std::string pipeline;
    std::pair<int32_t, int32_t> key;
  };
  std::vector<Slot> probes;
  std::vector<ProbeTarget> targets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, p] : replicas_) {
      for (const auto& [key, m] : p.members) {
        probes.push_back({name, key});
        targets.push_back({m.registration.control_address(), m.registration.epoch()});
      }
    }
  }
  const std::vector<Probe> probed = control_->ProbeAll(targets, options_.heartbeat);
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = Clock::now();
  for (size_t i = 0; i < probes.size(); ++i) {
    auto pit = replicas_.find(probes[i].pipeline);
    if (pit == replicas_.end()) continue;
    auto mit = pit->second.members.find(probes[i].key);
    // A member that re-registered meanwhile (another epoch) keeps its own record.
    if (mit == pit->second.members.end() || mit->second.registration.epoch() != targets[i].epoch) continue;
    Member& m = mit->second;
    m.gone_probes = probed[i] == Probe::kGone ? m.gone_probes + 1 : 0;
    m.draining = probed[i] == Probe::kDraining;
    if (probed[i] == Probe::kAlive) m.last_ok = now;
  }
  for (auto& [name, p] : replicas_) {
    if (p.state != PipelineState::kUp && p.state != PipelineState::kWarming && p.state != PipelineState::kDraining) {
      continue;
    }
    for (const auto& [key, m] : p.members) {
      std::string why;
      DownCause cause = DownCause::kDeadStage;
      if (m.draining) {
        // Its requests move now rather than after down_after of silence
        // (a draining worker takes no new steps).
        cause = DownCause::kDrainingStage;
        why = absl::StrCat("stage ", key.first, " rank ", key.second, " is draining");
      } else if (m.gone_probes >= options_.gone_after_probes) {
        why = absl::StrCat("stage ", key.first, " rank ", key.second, " is gone (no process answers at ",
                           m.registration.control_address(), ")");
      } else if (now - m.last_ok > options_.down_after) {
        cause = DownCause::kHungStage;
        why = absl::StrCat("stage ", key.first, " rank ", key.second, " has not answered for ",
                           std::chrono::duration_cast<std::chrono::milliseconds>(now - m.last_ok).count(), " ms");
      } else {
        continue;
      }
      SetState(&p, PipelineState::kDown, why);
      down_events_.push_back({name, why, cause});
      break;
    }
  }
}

std::vector<PipelinePlan> Fleet::TakeReadyToWarm() {
  std::vector<PipelinePlan> ready;
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = Clock::now();
  for (auto& [name, p] : replicas_) {
    if (!p.Complete() || (p.state != PipelineState::kForming && p.state != PipelineState::kDown)) continue;
    // One heartbeat between warm-ups, doubled after each failed one.
    auto wait = options_.heartbeat;
    for (int i = 0; i < p.failed_warm_ups && wait < options_.max_warm_up_backoff; ++i) wait *= 2;
    if (now - p.last_warm_up < std::min(wait, std::max(options_.heartbeat, options_.max_warm_up_backoff))) continue;
    bool healthy = true;
    for (const auto& [key, m] : p.members) {
      healthy = healthy && now - m.last_ok <= options_.down_after && m.gone_probes == 0 && !m.draining;
    }
    if (!healthy) continue;
    PipelinePlan plan;
    plan.name = name;
    plan.num_stages = p.num_stages;
    plan.tp_size = p.tp_size;
    plan.block_size = p.block_size;
    plan.num_blocks = INT64_MAX;
    plan.movable_boundaries = p.num_stages > 1;
    for (const auto& [key, m] : p.members) {
      plan.num_blocks = std::min<int64_t>(plan.num_blocks, m.registration.kv_num_blocks());
      plan.movable_boundaries = plan.movable_boundaries && m.registration.identity().movable_boundaries();
      plan.control.push_back(m.registration.control_address());
      if (key.first == 0) plan.stage0_data.push_back(m.registration.data_address());  // ranks in order
    }
    SetState(&p, PipelineState::kWarming, "");
    p.last_warm_up = now;
    plan.warm_up = ++p.warm_ups;
    ready.push_back(std::move(plan));
  }
  return ready;
}

bool Fleet::Warming(const std::string& pipeline, uint64_t warm_up) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(pipeline);
  return it != replicas_.end() && it->second.state == PipelineState::kWarming && it->second.warm_ups == warm_up;
}

void Fleet::WarmUpFailed(const std::string& pipeline, uint64_t warm_up, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(pipeline);
  if (it == replicas_.end() || it->second.state != PipelineState::kWarming || it->second.warm_ups != warm_up) return;
  it->second.failed_warm_ups++;
  SetState(&it->second, PipelineState::kDown, reason);
}

void Fleet::MarkUp(const std::string& pipeline) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(pipeline);
  if (it == replicas_.end() || it->second.state != PipelineState::kWarming) return;
  it->second.failed_warm_ups = 0;
  SetState(&it->second, PipelineState::kUp, "");
}

void Fleet::MarkDown(const std::string& pipeline, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(pipeline);
  if (it != replicas_.end()) SetState(&it->second, PipelineState::kDown, reason);
}

void Fleet::DrainAll() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, p] : replicas_) {
    if (p.state == PipelineState::kUp) SetState(&p, PipelineState::kDraining, "the router is draining");
  }
}

std::vector<DownEvent> Fleet::TakeDownEvents() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(down_events_, {});
}

PipelineState Fleet::state(const std::string& pipeline) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(pipeline);
  return it == replicas_.end() ? PipelineState::kForming : it->second.state;
}

std::string Fleet::down_reason(const std::string& pipeline) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = replicas_.find(pipeline);
  return it == replicas_.end() ? "" : it->second.reason;
}

}  // namespace strata::router
