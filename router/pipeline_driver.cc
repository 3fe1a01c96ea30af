#include "router/pipeline_driver.h"

#include <algorithm>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "router/pipeline_epoch.h"

namespace strata::router {

using std::chrono::milliseconds;

struct PipelineDriver::StepSends {
  std::string bytes;
  std::vector<std::unique_ptr<transport::PendingSend>> sends;

  bool AllDone() const {
    for (const auto& s : sends) {
      if (!s->Done()) return false;
    }
    return true;
  }
};

PipelineDriver::PipelineDriver(std::string name, transport::Transport* transport, uint64_t* next_step_id,
                               const DriverOptions& options, RouterMetrics* metrics)
    : name_(std::move(name)), transport_(transport), next_step_id_(next_step_id), options_(options),
      metrics_(metrics),
      watchdog_(StepWatchdogOptions{options.watchdog_floor, options.watchdog_factor, options.step_timeout}) {}

PipelineDriver::~PipelineDriver() {
  if (scheduler_) scheduler_->FailAll(Finish::kUnavailable, "the router is shutting down");
}

absl::Status PipelineDriver::BringUp(const PipelinePlan& plan, int32_t warmup_token) {
  plan_ = plan;
  epoch_ = NextPipelineEpoch();
  stage0_.clear();
  for (size_t r = 0; r < plan.stage0_data.size(); ++r) {
    auto hp = transport::ParseHostPort(plan.stage0_data[r], "stage 0");
    auto peer = hp.ok() ? transport_->Connect(*hp) : hp.status();
    if (!peer.ok()) {
      return absl::UnavailableError(absl::StrCat("cannot reach stage 0 rank ", r, ": ", peer.status().message()));
    }
    stage0_.push_back(*peer);
  }
  transport::StepPlan warmup;
  warmup.step_id = (*next_step_id_)++;
  transport::PlanSequence s;
  s.seq_id = 0;
  s.num_tokens = 1;
  s.block_table = {0};
  s.sample = true;
  warmup.sequences = {s};
  warmup.token_ids = {warmup_token};
  if (absl::Status st = SendPlan(warmup); !st.ok()) {
    return absl::UnavailableError(absl::StrCat("warm-up send failed: ", st.message()));
  }
  warmup_step_ = warmup.step_id;
  in_flight_[warmup.step_id] = {Clock::now(), 1};
  watchdog_.Clear();  // steps of the last bring-up tell nothing of this one's processes
  last_result_ = Clock::time_point();
  return absl::OkStatus();
}

uint64_t PipelineDriver::TakeDown(const std::string& why, std::vector<Migrant>* migrants) {
  if (scheduler_ && migrants) {
    for (auto& [spec, sink] : scheduler_->TakeAll()) {
      migrants->push_back({std::move(spec), static_cast<RequestStream*>(sink)});
    }
  }
  if (scheduler_) scheduler_->FailAll(Finish::kUnavailable, absl::StrCat("pipeline ", name_, " is down: ", why));
  scheduler_.reset();
  balancer_.reset();  // the next bring-up may place stages on other machines
  streams_.clear();
  in_flight_.clear();
  for (auto& [step, sends] : sending_) graveyard_.push_back(std::move(sends));
  sending_.clear();
  warmup_step_ = 0;
  return *next_step_id_ - 1;
}

uint64_t PipelineDriver::Add(SequenceSpec spec, RequestStream* stream) {
  const uint64_t seq = scheduler_->Add(std::move(spec), stream);
  streams_[seq] = stream;
  return seq;
}

void PipelineDriver::Cancel(uint64_t seq_id) {
  if (scheduler_ && streams_.count(seq_id)) scheduler_->Cancel(seq_id);
}

int64_t PipelineDriver::CachedPrefixBlocks(const SequenceSpec& spec) const {
  return scheduler_ ? scheduler_->CachedPrefixTokens(spec) / scheduler_->blocks().block_size() : 0;
}

// One cached block counts as one free block: the sequence needs that many
// fewer, and skips that much prefill. A replica holding a 1,000-token
// prefix (62 blocks of 16) wins until its queue is 15 longer than
// another's; then the other takes one, computes the prefix and caches it
// too, so a hot prefix spreads to every replica its traffic needs.
int64_t PipelineDriver::Score(const SequenceSpec& spec) const {
  if (!scheduler_) return INT64_MIN;
  return scheduler_->blocks().free_blocks() - 4 * scheduler_->waiting() + CachedPrefixBlocks(spec);
}

void PipelineDriver::RecordPrefixCache() {
  const uint64_t queries = scheduler_->prefix_queried_tokens(), hits = scheduler_->prefix_hit_tokens();
  const uint64_t evictions = scheduler_->blocks().evictions();
  if (metrics_) {
    const RouterMetrics::PipelineSeries p = metrics_->Pipeline(name_);
    p.prefix_queries_tokens->Increment(static_cast<double>(queries - recorded_queries_));
    p.prefix_hits_tokens->Increment(static_cast<double>(hits - recorded_hits_));
    p.prefix_evictions->Increment(static_cast<double>(evictions - recorded_evictions_));
  }
  recorded_queries_ = queries;
  recorded_hits_ = hits;
  recorded_evictions_ = evictions;
}

// Posts `plan` to every stage-0 rank without waiting; ReapSends collects
// the outcome. On a failed post the sends already made finish in the
// graveyard.
absl::Status PipelineDriver::SendPlan(const transport::StepPlan& plan) {
  auto sends = std::make_unique<StepSends>();
  sends->bytes = transport::EncodePlan(plan);
  transport::WireHeader h;
  h.type = static_cast<uint16_t>(transport::MessageType::kStepPlan);
  h.step_id = plan.step_id;
  h.plan_bytes = static_cast<uint32_t>(sends->bytes.size());
  h.epoch = epoch_;              // the workers re-form at the first step of a new one
  h.key_id = plan_.data_key_id;  // the transport signs with this epoch's key
  for (int peer : stage0_) {
    auto send = transport_->SendAsync(peer, h, {{sends->bytes.data(), sends->bytes.size()}});
    if (!send.ok()) {
      graveyard_.push_back(std::move(sends));
      return send.status();
    }
    sends->sends.push_back(std::move(*send));
  }
  sending_[plan.step_id] = std::move(sends);
  return absl::OkStatus();
}

// Finished sends: their outcome, and their buffers freed. Never blocks.
absl::Status PipelineDriver::ReapSends() {
  absl::Status failed;
  for (auto it = sending_.begin(); it != sending_.end();) {
    if (!it->second->AllDone()) {
      ++it;
      continue;
    }
    for (const auto& s : it->second->sends) {
      absl::Status st = transport_->Wait(s.get(), milliseconds(1));
      if (!st.ok() && failed.ok()) failed = st;
    }
    it = sending_.erase(it);
  }
  for (auto it = graveyard_.begin(); it != graveyard_.end();) {
    if ((*it)->AllDone()) {
      for (const auto& s : (*it)->sends) (void)transport_->Wait(s.get(), milliseconds(1));
      it = graveyard_.erase(it);
    } else {
      ++it;
    }
  }
  return failed;
}

std::optional<absl::Status> PipelineDriver::Tick(Clock::time_point now) {
  AccountInFlight(now);
  for (const auto& [step, out] : in_flight_) {
    if (now - out.sent > options_.step_timeout) {
      return absl::DeadlineExceededError(
          absl::StrCat("step ", step, " got no result within ", options_.step_timeout.count(), " ms"));
    }
  }
  // The watchdog times the oldest step from when it went or the result
  // before it came back, whichever is later: the steps behind it wait for
  // it at each stage, and its own time is what the pipeline owes.
  if (options_.watchdog_floor.count() > 0 && !in_flight_.empty() && in_flight_.begin()->first != warmup_step_) {
    const auto& [step, out] = *in_flight_.begin();
    const std::chrono::milliseconds deadline = watchdog_.Deadline(out.rows);
    if (now - std::max(out.sent, last_result_) > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("step ", step, " (", out.rows, " rows) got no result within ", deadline.count(),
                       " ms, the watchdog's deadline from the steps before it: the pipeline stopped moving"));
    }
  }
  while (scheduler_ && static_cast<int32_t>(in_flight_.size()) < plan_.num_stages) {
    const uint64_t step = *next_step_id_;
    const uint64_t preempted_before = scheduler_->preemptions();
    auto plan = scheduler_->NextStep(step);
    if (metrics_) metrics_->preemptions->Increment(static_cast<double>(scheduler_->preemptions() - preempted_before));
    RecordPrefixCache();
    if (!plan) break;
    ++*next_step_id_;
    for (const auto& s : plan->sequences) {
      auto it = streams_.find(s.seq_id);
      if (it != streams_.end()) it->second->MarkScheduled(now);
    }
    Out out{now, plan->NumRows()};
    if (balancer_) {
      out.shape = StepShape::Of(*plan);
      out.shifted = plan->shift_boundaries = balancer_->Choose(out.shape);
      if (metrics_ && out.shifted) metrics_->PipelineShiftedSteps(name_).Increment();
    }
    in_flight_[step] = out;
    if (metrics_) metrics_->PipelineSteps(name_).Increment();
    if (absl::Status st = SendPlan(*plan); !st.ok()) {
      return absl::UnavailableError(absl::StrCat("sending a step to stage 0 failed: ", st.message()));
    }
  }
  if (absl::Status st = ReapSends(); !st.ok()) {
    return absl::UnavailableError(absl::StrCat("sending a step to stage 0 failed: ", st.message()));
  }
  return std::nullopt;
}

absl::Status PipelineDriver::CheckTokens(const transport::StepResult& r) const {
  if (options_.vocab_size <= 0) return absl::OkStatus();
  for (const auto& s : r.sequences) {
    if (s.token < -1 || s.token >= options_.vocab_size) {
      return absl::InternalError(absl::StrCat("stage result for sequence ", s.seq_id, " has token ", s.token,
                                              " outside the vocabulary of ", options_.vocab_size));
    }
    for (const auto& t : s.top) {
      if (t.token < 0 || t.token >= options_.vocab_size) {
        return absl::InternalError(absl::StrCat("stage result for sequence ", s.seq_id, " has a top token ", t.token,
                                                " outside the vocabulary"));
      }
    }
  }
  return absl::OkStatus();
}

PipelineDriver::ResultOutcome PipelineDriver::OnResult(const transport::StepResult& r, Clock::time_point now,
                                                       std::string* why) {
  AccountInFlight(now);
  auto out = in_flight_.find(r.step_id);
  if (out == in_flight_.end()) return ResultOutcome::kNotMine;
  if (r.ok() && r.step_id != warmup_step_) {
    const auto began = std::max(out->second.sent, last_result_);
    watchdog_.Record(out->second.rows, std::chrono::duration<double>(now - began).count());
  }
  last_result_ = std::max(last_result_, now);
  if (balancer_ && r.ok() && r.step_id != warmup_step_) {
    balancer_->Record(out->second.shape, out->second.shifted, r.timings);
  }
  in_flight_.erase(out);
  RecordTimings(r);
  if (r.step_id == warmup_step_) {
    warmup_step_ = 0;
    if (!r.ok()) {
      *why = absl::StrCat("warm-up step failed: ", r.error);
      return ResultOutcome::kMustGoDown;
    }
    SchedulerOptions so = options_.scheduler;
    so.micro_batches = std::max<int32_t>(1, plan_.num_stages);  // a step per stage in flight
    scheduler_ = std::make_unique<Scheduler>(plan_.num_blocks, plan_.block_size, so);
    balancer_ = plan_.movable_boundaries ? std::make_unique<BoundaryBalancer>(plan_.num_stages) : nullptr;
    recorded_queries_ = recorded_hits_ = recorded_evictions_ = 0;
    std::cerr << "strata-router: pipeline " << name_ << " is up (" << plan_.num_blocks << " KV blocks of "
              << plan_.block_size << " tokens)" << std::endl;
    return ResultOutcome::kWarmedUp;
  }
  const absl::StatusCode code = r.status().code();
  if (code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded) {
    *why = r.error;
    return ResultOutcome::kMustGoDown;
  }
  if (!scheduler_) return ResultOutcome::kApplied;
  if (absl::Status bad = CheckTokens(r); !bad.ok()) {
    transport::StepResult failed;
    failed.step_id = r.step_id;
    failed.SetStatus(bad);
    scheduler_->OnResult(failed);
    return ResultOutcome::kApplied;
  }
  int generated = 0;
  for (const auto& s : r.sequences) generated += s.token >= 0 ? 1 : 0;
  scheduler_->OnResult(r);
  if (metrics_) {
    metrics_->generated_tokens->Increment(generated);
    metrics_->Pipeline(name_).generated_tokens->Increment(generated);
  }
  return ResultOutcome::kApplied;
}

void PipelineDriver::RecordTimings(const transport::StepResult& r) {
  for (const transport::StageTiming& t : r.timings) {
    window_busy_[t.stage] += t.compute_seconds + t.allreduce_seconds;
    if (!metrics_) continue;
    metrics_->StageSeconds(name_, t.stage, "queue").Observe(t.queue_seconds);
    metrics_->StageSeconds(name_, t.stage, "compute").Observe(t.compute_seconds);
    metrics_->StageSeconds(name_, t.stage, "allreduce").Observe(t.allreduce_seconds);
    metrics_->StageSeconds(name_, t.stage, "send").Observe(t.send_seconds);
    metrics_->StageBusySeconds(name_, t.stage).Increment(t.compute_seconds + t.allreduce_seconds);
  }
}

// In-flight time accrues while at least one step is out; each window the
// bubble is 1 - (mean busy time over the stages) / (in-flight time).
void PipelineDriver::AccountInFlight(Clock::time_point now) {
  if (accounted_ == Clock::time_point()) accounted_ = window_start_ = now;
  if (!in_flight_.empty() && now > accounted_) {
    const double secs = std::chrono::duration<double>(now - accounted_).count();
    window_in_flight_ += secs;
    if (metrics_) metrics_->InFlightSeconds(name_).Increment(secs);
  }
  accounted_ = now;
  if (now - window_start_ < options_.bubble_window || window_in_flight_ <= 0) return;
  double busy = 0;
  for (const auto& [stage, secs] : window_busy_) busy += secs;
  const double stages = std::max<double>(1, plan_.num_stages);
  const double bubble = std::clamp(1.0 - busy / stages / window_in_flight_, 0.0, 1.0);
  last_bubble_ = bubble;
  if (metrics_) metrics_->Bubble(name_).Set(bubble);
  window_busy_.clear();
  window_in_flight_ = 0;
  window_start_ = now;
}

}  // namespace strata::router
