#include "worker/data_loop.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace strata::worker {

using std::chrono::milliseconds;

namespace {

double Seconds(DataLoop::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

DataLoop::DataLoop(const model::StagePlace& place, const DataLoopOptions& options, transport::Transport* transport,
                   StepRunner* runner, const AbortList* aborts, WorkerMetrics* metrics, TpGroup* group)
    : place_(place), options_(options), transport_(transport), runner_(runner), aborts_(aborts), metrics_(metrics),
      group_(group), comm_(group ? group->communicator() : nullptr), result_address_(options.result_address) {}

DataLoop::~DataLoop() { Stop(); }

void DataLoop::Start() {
  thread_ = std::thread([this] { Run(); });
}

void DataLoop::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void DataLoop::SetResultAddress(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  // --result-address, when given, wins; else the latest router's answer
  // (a restarted router listens for results elsewhere).
  if (options_.result_address.empty()) result_address_ = address;
}

void DataLoop::SetEpochFloor(uint64_t floor) {
  floor_ = floor;
  registrations_++;
}

DataLoop::Clock::time_point DataLoop::last_message() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_message_;
}

void DataLoop::Run() {
  while (!stop_) {
    auto m = transport_->Receive(milliseconds(100));
    const uint64_t rejected = transport_->stats().messages_rejected;
    if (rejected > rejected_seen_) {
      metrics_->messages_rejected->Increment(static_cast<double>(rejected - rejected_seen_));
      rejected_seen_ = rejected;
    }
    if (!m.ok()) {
      FinishInFlight();  // idle: surface a failed send now
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_message_ = Clock::now();
    }
    if (reconnect_.exchange(false)) DropConnections();
    Handle(*m);
    transport_->Recycle(std::move(*m));  // its buffer serves a later receive
  }
  FinishInFlight();
}

void DataLoop::DropConnections() {
  FinishInFlight();
  for (int* peer : {&next_peer_, &result_peer_}) {
    if (*peer >= 0) transport_->Disconnect(*peer);
    *peer = -1;
  }
}

transport::WireHeader DataLoop::Header(transport::MessageType type, uint64_t step_id) const {
  transport::WireHeader h;
  h.type = static_cast<uint16_t>(type);
  h.step_id = step_id;
  h.epoch = epoch_;  // passed on: the router's epoch of this pipeline
  h.src_stage = static_cast<int16_t>(place_.stage());
  h.src_rank = static_cast<int16_t>(place_.tp_rank());
  return h;
}

void DataLoop::ObservePhases(const transport::StageTiming& t) {
  metrics_->queue_seconds->Observe(t.queue_seconds);
  metrics_->compute_seconds->Observe(t.compute_seconds);
  metrics_->allreduce_seconds->Observe(t.allreduce_seconds);
  metrics_->send_seconds->Observe(t.send_seconds);
}

bool DataLoop::InEpoch(const transport::Message& m) {
  const uint64_t e = m.header.epoch;
  const uint64_t registrations = registrations_;
  const uint64_t floor = floor_;
  bool stale = (options_.await_registration && registrations == 0) || e < floor;
  // An epoch adopted since the latest registration orders the others; one
  // from before it (an earlier router's) orders nothing.
  const bool ordered = in_epoch_ && epoch_registration_ == registrations;
  // The epoch in force goes on across a registration (every rank of the
  // stage must re-form at the same step, and only a new epoch says when).
  if (!stale && in_epoch_ && e == epoch_) return true;
  stale = stale || (ordered && e < epoch_);
  if (stale) {
    metrics_->steps_aborted->Increment();
    return false;
  }
  // A new epoch (or a restarted router's, whose floor is above ours).
  if (in_epoch_) DropConnections();
  in_epoch_ = true;
  epoch_ = e;
  epoch_registration_ = registrations;
  if (group_ != nullptr && group_->size() > 1) {
    if (absl::Status s = group_->Form(e); !s.ok()) {
      StepFailed(m.header.step_id, s);
      return false;
    }
    std::cerr << options_.log_prefix << ": tensor-parallel group formed for pipeline epoch " << e << std::endl;
  }
  return true;
}

void DataLoop::Handle(const transport::Message& m) {
  metrics_->activation_bytes_received->Increment(static_cast<double>(m.data.size()));
  if (!InEpoch(m)) return;
  if (place_.tp_size() == 1 && aborts_->Drops(m)) {
    metrics_->steps_aborted->Increment();
    return;
  }
  const auto start = Clock::now();
  if (comm_) (void)comm_->TakeSeconds();
  absl::StatusOr<StepOutput> out = runner_->Run(m);
  const auto done = Clock::now();
  if (!out.ok()) {
    StepFailed(m.header.step_id, out.status());
    return;
  }
  transport::StageTiming timing;
  timing.stage = place_.stage();
  timing.queue_seconds = static_cast<float>(std::max(0.0, Seconds(start - m.received)));
  timing.allreduce_seconds = static_cast<float>(comm_ ? comm_->TakeSeconds() : 0.0);
  timing.compute_seconds = std::max(0.0f, static_cast<float>(Seconds(done - start)) - timing.allreduce_seconds);
  (out->is_prefill ? metrics_->prefill_step_seconds : metrics_->decode_step_seconds)->Observe(Seconds(done - start));
  (out->is_prefill ? metrics_->prefill_steps : metrics_->decode_steps)->Increment();
  metrics_->rows->Increment(static_cast<double>(out->rows));
  metrics_->kv_blocks_used->Set(static_cast<double>(out->kv_blocks_used));
  if (!place_.has_lm_head()) {
    Forward(*out, timing);
    return;
  }
  if (!place_.is_stage_leader()) {
    ObservePhases(timing);
    return;  // rank 0 of the last stage answers
  }
  out->StampTiming(timing);
  ObservePhases(timing);
  SendResult(out->result);
}

void DataLoop::Forward(StepOutput& out, transport::StageTiming timing) {
  // One send in flight: the previous step's must be done before this one
  // goes (the time that takes is this step's send phase).
  const auto send_start = Clock::now();
  FinishInFlight();
  auto f = std::make_unique<InFlight>();
  f->step_id = out.plan.step_id;
  absl::StatusOr<int> peer = Peer(options_.next_stage, &next_peer_);
  timing.send_seconds = static_cast<float>(Seconds(Clock::now() - send_start));
  out.StampTiming(timing);
  ObservePhases(timing);
  f->buffer = std::move(out.activations);
  if (peer.ok()) {
    transport::WireHeader h = Header(transport::MessageType::kActivations, out.plan.step_id);
    h.plan_bytes = out.plan_bytes;
    h.payload_bytes = f->buffer.size() - out.plan_bytes;
    auto send = transport_->SendAsync(*peer, h, {{f->buffer.data(), f->buffer.size()}});
    if (send.ok()) {
      f->send = std::move(*send);
      in_flight_ = std::move(f);
      return;
    }
    peer = send.status();
  }
  next_peer_ = -1;  // reconnect next time (the next stage may have restarted)
  StepFailed(out.plan.step_id, absl::UnavailableError(absl::StrCat("forwarding activations: ", peer.status().message())));
}

// Waits for the previous activations send; a failure fails that step.
void DataLoop::FinishInFlight() {
  if (!in_flight_) return;
  std::unique_ptr<InFlight> f = std::move(in_flight_);
  absl::Status s = transport_->Wait(f->send.get(), options_.step_timeout);
  if (s.ok()) {
    metrics_->activation_bytes_sent->Increment(static_cast<double>(f->buffer.size()));
    metrics_->activation_transfer_seconds->Observe(f->send->transfer_seconds);
    runner_->Reuse(std::move(f->buffer));  // sent: the next step writes into it
    return;
  }
  next_peer_ = -1;
  StepFailed(f->step_id, absl::UnavailableError(absl::StrCat("forwarding activations: ", s.message())));
}

void DataLoop::StepFailed(uint64_t step_id, const absl::Status& status) {
  metrics_->failed_steps->Increment();
  std::cerr << options_.log_prefix << ": step " << step_id << " failed: " << status << std::endl;
  if (!place_.is_stage_leader()) return;  // rank 0 of the stage tells the router
  transport::StepResult r;
  r.step_id = step_id;
  r.SetStatus(absl::Status(status.code(), absl::StrCat("pipeline ", options_.pipeline, " stage ", place_.stage(),
                                                       ": ", status.message())));
  SendResult(r);
}

absl::StatusOr<int> DataLoop::Peer(const std::string& address, int* cached) {
  if (*cached >= 0) return *cached;
  STRATA_ASSIGN_OR_RETURN(transport::HostPort hp, transport::ParseHostPort(address, "peer"));
  STRATA_ASSIGN_OR_RETURN(*cached, transport_->Connect(hp));
  return *cached;
}

void DataLoop::SendResult(transport::StepResult& r) {
  std::string address;
  {
    std::lock_guard<std::mutex> lock(mu_);
    address = result_address_;
  }
  if (address.empty()) {
    std::cerr << options_.log_prefix << ": step " << r.step_id
              << ": no result address yet (no router answered); result dropped" << std::endl;
    return;
  }
  if (address != result_peer_address_) {
    result_peer_ = -1;
    result_peer_address_ = address;
  }
  const std::string bytes = transport::EncodeResult(r);
  transport::WireHeader h = Header(transport::MessageType::kStepResult, r.step_id);
  h.payload_bytes = bytes.size();
  absl::StatusOr<int> peer = Peer(address, &result_peer_);
  const auto start = Clock::now();
  absl::Status s = peer.ok() ? transport_->Send(*peer, h, {{bytes.data(), bytes.size()}}, options_.step_timeout)
                             : peer.status();
  if (!s.ok()) {
    result_peer_ = -1;  // reconnect next time (the router may have restarted)
    std::cerr << options_.log_prefix << ": step " << r.step_id << ": sending the result failed: " << s.message()
              << std::endl;
    return;
  }
  metrics_->activation_bytes_sent->Increment(static_cast<double>(bytes.size()));
  metrics_->activation_transfer_seconds->Observe(Seconds(Clock::now() - start));
}

}  // namespace strata::worker
