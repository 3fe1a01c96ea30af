#include "router/engine.h"

#include <algorithm>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"

namespace strata::router {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---------------------------------------------------------------- streams

void RequestStream::Token(const TokenOut& token) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.tokens.push_back(token);
  has_pending_ = true;
  cv_.notify_all();
}

void RequestStream::Finished(Finish reason, int32_t prompt_tokens, int32_t completion_tokens,
                             const std::string& error, const std::vector<float>& score) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.finished = true;
  pending_.reason = reason;
  pending_.prompt_tokens = prompt_tokens;
  pending_.completion_tokens = completion_tokens;
  pending_.error = error;
  pending_.score = score;
  has_pending_ = true;
  finished_ = true;
  cv_.notify_all();
}

RequestStream::Event RequestStream::Next(milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return has_pending_; });
  Event e = std::move(pending_);
  pending_ = Event();
  has_pending_ = false;
  return e;
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

// ---------------------------------------------------------------- pipelines

// A StepPlan's bytes, alive until every rank's send completed.
struct Engine::StepSends {
  std::string bytes;
  std::vector<std::unique_ptr<transport::PendingSend>> sends;

  bool AllDone() const {
    for (const auto& s : sends) {
      if (!s->Done()) return false;
    }
    return true;
  }
};

struct Engine::Pipeline {
  enum class State { kForming, kWarming, kUp, kDown };
  struct Member {
    v1::RegisterRequest reg;
    std::shared_ptr<v1::Worker::Stub> stub;
    Clock::time_point last_ok = Clock::now();
  };
  std::string name;
  int32_t num_stages = 0, tp_size = 0;
  int64_t block_size = 0;
  std::map<std::pair<int32_t, int32_t>, Member> members;  // (stage, rank)
  State state = State::kForming;
  std::string down_reason;
  std::unique_ptr<Scheduler> sched;
  std::vector<int> stage0;  // data-plane peers of stage 0's ranks
  std::map<uint64_t, Clock::time_point> in_flight;  // step id -> sent
  uint64_t warmup_step = 0;
  std::map<uint64_t, RequestStream*> streams;  // scheduler sequence id -> stream
  // StepPlans still being sent to stage 0 (sends never block the engine
  // thread: a hung stage-0 worker must not stall the router).
  std::map<uint64_t, std::unique_ptr<StepSends>> sending;

  bool Complete() const { return num_stages > 0 && static_cast<int32_t>(members.size()) == num_stages * tp_size; }
  int64_t MinBlocks() const {
    int64_t n = INT64_MAX;
    for (const auto& [k, m] : members) n = std::min<int64_t>(n, m.reg.kv_num_blocks());
    return n;
  }
};

namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

}  // namespace

Engine::Engine(const EngineOptions& options, RouterMetrics* metrics) : options_(options), metrics_(metrics) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options, RouterMetrics* metrics) {
  std::unique_ptr<Engine> e(new Engine(options, metrics));
  transport::UcxOptions uo;
  uo.listen = {options.host, options.data_port};
  uo.peer_failure_detection = options.ucx_peer_errors;
  auto t = transport::UcxTransport::Create(uo);
  if (!t.ok()) return t.status();
  e->transport_ = std::move(*t);
  Engine* raw = e.get();
  e->loop_ = std::thread([raw] { raw->Loop(); });
  e->heartbeat_ = std::thread([raw] { raw->HeartbeatLoop(); });
  return e;
}

Engine::~Engine() {
  stop_ = true;
  transport_->Interrupt();
  if (loop_.joinable()) loop_.join();
  if (heartbeat_.joinable()) heartbeat_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, p] : pipelines_) {
    if (p->sched) p->sched->FailAll(Finish::kUnavailable, "the router is shutting down");
  }
}

std::string Engine::data_address() const { return transport_->address(); }

bool Engine::Model(v1::ModelInfo* info, int32_t* up, int32_t* total) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!have_model_) return false;
  *info = model_;
  info->clear_stages();
  *up = 0;
  *total = static_cast<int32_t>(pipelines_.size());
  for (const auto& [name, p] : pipelines_) {
    if (p->state == Pipeline::State::kUp) ++*up;
  }
  // The plan of stages, from the first pipeline with members.
  for (const auto& [name, p] : pipelines_) {
    for (int32_t s = 0; s < p->num_stages; ++s) {
      auto it = p->members.find({s, 0});
      if (it == p->members.end()) continue;
      v1::StagePlan* sp = info->add_stages();
      sp->set_stage(s);
      sp->set_first_layer(it->second.reg.identity().first_layer());
      sp->set_last_layer(it->second.reg.identity().last_layer());
      sp->set_tp_size(p->tp_size);
      sp->set_has_embedding(it->second.reg.identity().has_embedding());
      sp->set_has_lm_head(it->second.reg.identity().has_lm_head());
    }
    break;
  }
  return true;
}

int64_t Engine::KvCapacityTokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t n = 0;
  for (const auto& [name, p] : pipelines_) {
    if (!p->sched) continue;
    const int64_t t = p->sched->blocks().num_blocks() * p->sched->blocks().block_size();
    n = n == 0 ? t : std::min(n, t);
  }
  return n;
}

absl::Status Engine::Register(const v1::RegisterRequest& r) {
  const v1::WorkerIdentity& id = r.identity();
  const v1::ModelShape& shape = r.shape();
  if (id.pipeline().empty() || id.pipeline().size() > 64) return Invalid("identity.pipeline must be 1 to 64 characters");
  if (id.num_stages() < 1 || id.num_stages() > 1024) return Invalid("identity.num_stages must be in [1, 1024]");
  if (id.stage() < 0 || id.stage() >= id.num_stages()) {
    return Invalid(absl::StrCat("identity.stage ", id.stage(), " is outside [0, ", id.num_stages(), ")"));
  }
  if (id.tp_size() < 1 || id.tp_size() > 64) return Invalid("identity.tp_size must be in [1, 64]");
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
  if (r.kv_num_blocks() < 1 || r.kv_block_size() < 1) return Invalid("kv_num_blocks and kv_block_size must be positive");
  for (const std::string* a : {&r.data_address(), &r.control_address()}) {
    if (!transport::ParseHostPort(*a, "address").ok()) return Invalid(absl::StrCat("address \"", *a, "\" is not HOST:PORT"));
  }

  std::lock_guard<std::mutex> lock(mu_);
  if (!have_model_) {
    model_.set_name(r.model_name());
    *model_.mutable_shape() = shape;
    have_model_ = true;
  } else if (r.model_name() != model_.name()) {
    return absl::FailedPreconditionError(
        absl::StrCat("this router serves model \"", model_.name(), "\"; the worker holds \"", r.model_name(), "\""));
  } else if (!google::protobuf::util::MessageDifferencer::Equals(shape, model_.shape())) {
    return absl::FailedPreconditionError("the worker's model shape differs from the served model's");
  }
  auto& slot = pipelines_[id.pipeline()];
  if (!slot) {
    slot = std::make_unique<Pipeline>();
    slot->name = id.pipeline();
    slot->num_stages = id.num_stages();
    slot->tp_size = id.tp_size();
    slot->block_size = r.kv_block_size();
    if (metrics_) metrics_->PipelineUp(slot->name).Set(0);
  }
  Pipeline* p = slot.get();
  if (id.num_stages() != p->num_stages) {
    return Invalid(absl::StrCat("pipeline ", p->name, " has ", p->num_stages, " stages; this worker says ",
                                id.num_stages()));
  }
  if (id.tp_size() != p->tp_size) {
    return Invalid(absl::StrCat("pipeline ", p->name, " has tp_size ", p->tp_size, "; this worker says ", id.tp_size()));
  }
  if (r.kv_block_size() != p->block_size) {
    return Invalid(absl::StrCat("pipeline ", p->name, " has KV blocks of ", p->block_size, " tokens; this worker has ",
                                r.kv_block_size()));
  }
  // Layer ranges: the same on every rank of a stage, adjacent across stages,
  // from 0 to num_layers: the model exactly once.
  for (const auto& [key, m] : p->members) {
    const auto& other = m.reg.identity();
    if (key.first == id.stage() && key.second != id.tp_rank() &&
        (other.first_layer() != id.first_layer() || other.last_layer() != id.last_layer())) {
      return Invalid(absl::StrCat("stage ", id.stage(), " rank ", key.second, " holds layers [", other.first_layer(),
                                  ", ", other.last_layer(), "); this rank says [", id.first_layer(), ", ",
                                  id.last_layer(), ")"));
    }
    if (key.first == id.stage() - 1 && other.last_layer() != id.first_layer()) {
      return Invalid(absl::StrCat("stage ", id.stage() - 1, " ends at layer ", other.last_layer(), " but stage ",
                                  id.stage(), " starts at ", id.first_layer(), ": the plan must cover each layer once"));
    }
    if (key.first == id.stage() + 1 && other.first_layer() != id.last_layer()) {
      return Invalid(absl::StrCat("stage ", id.stage(), " ends at layer ", id.last_layer(), " but stage ",
                                  id.stage() + 1, " starts at ", other.first_layer(),
                                  ": the plan must cover each layer once"));
    }
  }
  if (id.stage() == 0 && id.first_layer() != 0) return Invalid("stage 0 must start at layer 0");
  if (id.stage() + 1 == id.num_stages() && id.last_layer() != shape.num_layers()) {
    return Invalid(absl::StrCat("the last stage must end at layer ", shape.num_layers()));
  }
  const auto key = std::make_pair(id.stage(), id.tp_rank());
  auto existing = p->members.find(key);
  if (existing != p->members.end() && existing->second.reg.epoch() != r.epoch() &&
      p->state != Pipeline::State::kForming) {
    SetDown(p, absl::StrCat("stage ", id.stage(), " rank ", id.tp_rank(), " restarted (new epoch)"));
  }
  Pipeline::Member m;
  m.reg = r;
  m.stub = v1::Worker::NewStub(grpc::CreateChannel(r.control_address(), grpc::InsecureChannelCredentials()));
  p->members[key] = std::move(m);
  std::cerr << "strata-router: registered " << p->name << " stage " << id.stage() << " rank " << id.tp_rank()
            << " (layers [" << id.first_layer() << ", " << id.last_layer() << "), " << r.kv_num_blocks()
            << " KV blocks, data " << r.data_address() << ")" << std::endl;
  return absl::OkStatus();
}

void Engine::SetDown(Pipeline* p, const std::string& why) {
  const bool was_up = p->state == Pipeline::State::kUp;
  if (p->state == Pipeline::State::kDown && p->down_reason == why) return;
  p->state = Pipeline::State::kDown;
  p->down_reason = why;
  std::cerr << "strata-router: pipeline " << p->name << " is down: " << why << std::endl;
  if (p->sched) p->sched->FailAll(Finish::kUnavailable, absl::StrCat("pipeline ", p->name, " is down: ", why));
  p->sched.reset();
  p->streams.clear();
  p->in_flight.clear();
  // Sends still travelling keep their buffers until UCX lets go of them.
  for (auto& [step, sending] : p->sending) graveyard_.push_back(std::move(sending));
  p->sending.clear();
  p->warmup_step = 0;
  if (was_up) pipelines_up_--;
  if (metrics_) metrics_->PipelineUp(p->name).Set(0);
  // Steps still travelling are ignored when they come back: their pipeline
  // no longer knows them. Workers drop the queued ones on Abort (every step
  // issued so far; later steps, such as the next warm-up, run).
  const uint64_t last_issued = next_step_ - 1;
  for (auto& [key, m] : p->members) {
    auto stub = m.stub;
    std::thread([stub, last_issued] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
      v1::AbortRequest a;
      a.set_up_to_step_id(last_issued);
      v1::AbortResponse r;
      (void)stub->Abort(&ctx, a, &r);
    }).detach();
  }
}

// Called with mu_ held: connects to stage 0 and sends a warm-up step.
void Engine::TryBringUp(Pipeline* p) {
  if (!p->Complete() || (p->state != Pipeline::State::kForming && p->state != Pipeline::State::kDown)) return;
  p->stage0.clear();
  for (int32_t r = 0; r < p->tp_size; ++r) {
    auto hp = transport::ParseHostPort(p->members[{0, r}].reg.data_address(), "stage 0");
    auto peer = hp.ok() ? transport_->Connect(*hp) : hp.status();
    if (!peer.ok()) {
      p->state = Pipeline::State::kDown;
      p->down_reason = absl::StrCat("cannot reach stage 0 rank ", r, ": ", peer.status().message());
      return;
    }
    p->stage0.push_back(*peer);
  }
  transport::StepPlan plan;
  plan.step_id = next_step_++;
  transport::PlanSequence s;
  s.seq_id = 0;
  s.num_tokens = 1;
  s.block_table = {0};
  s.sample = true;
  plan.sequences = {s};
  plan.token_ids = {static_cast<int32_t>(std::max<int64_t>(0, std::min<int64_t>(model_.shape().bos_token_id(),
                                                                                 model_.shape().vocab_size() - 1)))};
  if (absl::Status st = SendPlan(p, plan); !st.ok()) {
    p->state = Pipeline::State::kDown;
    p->down_reason = absl::StrCat("warm-up send failed: ", st.message());
    return;
  }
  p->state = Pipeline::State::kWarming;
  p->warmup_step = plan.step_id;
  p->in_flight[plan.step_id] = Clock::now();
}

uint64_t Engine::Submit(SequenceSpec spec, std::shared_ptr<RequestStream> stream) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t handle = next_handle_++;
  if (draining_) {
    stream->Finished(Finish::kUnavailable, 0, 0, "the router is draining", {});
    return handle;
  }
  inbox_.push_back({handle, std::move(spec), std::move(stream)});
  queued_++;
  transport_->Interrupt();
  return handle;
}

void Engine::Cancel(uint64_t handle) {
  std::lock_guard<std::mutex> lock(mu_);
  cancels_.push_back(handle);
  transport_->Interrupt();
}

void Engine::Schedule(Pipeline* p) {
  while (p->sched && static_cast<int32_t>(p->in_flight.size()) < p->num_stages) {
    const uint64_t step = next_step_++;
    const uint64_t preempted_before = p->sched->preemptions();
    auto plan = p->sched->NextStep(step);
    if (metrics_) metrics_->preemptions->Increment(static_cast<double>(p->sched->preemptions() - preempted_before));
    if (!plan) break;
    for (const auto& s : plan->sequences) {
      auto it = p->streams.find(s.seq_id);
      if (it != p->streams.end() && it->second->first_step.load() == Clock::time_point()) {
        it->second->first_step.store(Clock::now());
      }
    }
    p->in_flight[step] = Clock::now();
    if (metrics_) metrics_->PipelineSteps(p->name).Increment();
    if (absl::Status st = SendPlan(p, *plan); !st.ok()) {
      SetDown(p, absl::StrCat("sending a step to stage 0 failed: ", st.message()));
      return;
    }
  }
}

// Posts `plan` to every stage-0 rank without waiting (a hung stage-0 worker
// must not stall the engine thread); ReapSends collects the outcome. On a
// failed post the sends already made finish in the graveyard.
absl::Status Engine::SendPlan(Pipeline* p, const transport::StepPlan& plan) {
  auto sending = std::make_unique<StepSends>();
  sending->bytes = transport::EncodePlan(plan);
  transport::WireHeader h;
  h.type = static_cast<uint16_t>(transport::MessageType::kStepPlan);
  h.step_id = plan.step_id;
  h.plan_bytes = static_cast<uint32_t>(sending->bytes.size());
  for (int peer : p->stage0) {
    auto send = transport_->SendAsync(peer, h, {{sending->bytes.data(), sending->bytes.size()}});
    if (!send.ok()) {
      graveyard_.push_back(std::move(sending));
      return send.status();
    }
    sending->sends.push_back(std::move(*send));
  }
  p->sending[plan.step_id] = std::move(sending);
  return absl::OkStatus();
}

// Finished sends: their outcome, and their buffers freed. Called with mu_
// held; never blocks.
void Engine::ReapSends() {
  for (auto& [name, pp] : pipelines_) {
    Pipeline* p = pp.get();
    for (auto it = p->sending.begin(); it != p->sending.end();) {
      if (!it->second->AllDone()) {
        ++it;
        continue;
      }
      absl::Status failed;
      for (const auto& s : it->second->sends) {
        absl::Status st = transport_->Wait(s.get(), milliseconds(1));
        if (!st.ok() && failed.ok()) failed = st;
      }
      it = p->sending.erase(it);
      if (!failed.ok()) {
        SetDown(p, absl::StrCat("sending a step to stage 0 failed: ", failed.message()));
        break;
      }
    }
  }
  for (auto it = graveyard_.begin(); it != graveyard_.end();) {
    if ((*it)->AllDone()) {
      for (const auto& s : (*it)->sends) (void)transport_->Wait(s.get(), milliseconds(1));
      it = graveyard_.erase(it);
    } else {
      ++it;
    }
  }
}

void Engine::HandleResult(const transport::Message& m) {
  if (m.header.type != static_cast<uint16_t>(transport::MessageType::kStepResult)) return;
  auto r = transport::DecodeResult(m.payload(), m.header.payload_bytes);
  if (!r.ok()) {
    std::cerr << "strata-router: dropped a malformed result: " << r.status() << std::endl;
    return;
  }
  for (auto& [name, pp] : pipelines_) {
    Pipeline* p = pp.get();
    if (p->in_flight.erase(r->step_id) == 0) continue;
    if (r->step_id == p->warmup_step) {
      p->warmup_step = 0;
      if (!r->error.empty()) {
        SetDown(p, absl::StrCat("warm-up step failed: ", r->error));
        return;
      }
      p->state = Pipeline::State::kUp;
      p->down_reason.clear();
      p->sched = std::make_unique<Scheduler>(p->MinBlocks(), p->block_size, options_.scheduler);
      pipelines_up_++;
      if (metrics_) metrics_->PipelineUp(p->name).Set(1);
      std::cerr << "strata-router: pipeline " << p->name << " is up (" << p->MinBlocks() << " KV blocks of "
                << p->block_size << " tokens)" << std::endl;
      return;
    }
    if (!r->error.empty() &&
        (absl::StrContains(r->error, "UNAVAILABLE") || absl::StrContains(r->error, "DEADLINE_EXCEEDED"))) {
      SetDown(p, r->error);
      return;
    }
    if (p->sched) {
      int generated = 0;
      for (const auto& s : r->sequences) generated += s.token >= 0 ? 1 : 0;
      p->sched->OnResult(*r);
      if (metrics_) metrics_->generated_tokens->Increment(generated);
    }
    return;
  }
}

void Engine::UpdateGauges() {
  int64_t waiting = static_cast<int64_t>(inbox_.size()), running = 0, used = 0, total = 0;
  for (auto& [name, p] : pipelines_) {
    if (!p->sched) continue;
    waiting += p->sched->waiting();
    running += p->sched->running();
    used += p->sched->blocks().used_blocks();
    total += p->sched->blocks().num_blocks();
  }
  queued_ = waiting;
  if (metrics_) {
    metrics_->queue_depth->Set(static_cast<double>(waiting));
    metrics_->running->Set(static_cast<double>(running));
    metrics_->kv_usage->Set(total > 0 ? static_cast<double>(used) / static_cast<double>(total) : 0.0);
  }
}

void Engine::Loop() {
  while (!stop_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      // New requests go to the replica with the most free KV blocks and the
      // shortest queue.
      while (!inbox_.empty()) {
        Pending req = std::move(inbox_.front());
        inbox_.pop_front();
        Pipeline* best = nullptr;
        int64_t best_score = INT64_MIN;
        for (auto& [name, p] : pipelines_) {
          if (p->state != Pipeline::State::kUp || !p->sched) continue;
          const int64_t score = p->sched->blocks().free_blocks() - 4 * p->sched->waiting();
          if (score > best_score) {
            best_score = score;
            best = p.get();
          }
        }
        if (best == nullptr) {
          req.stream->Finished(Finish::kUnavailable, 0, 0, "no pipeline is serving", {});
          continue;
        }
        const uint64_t seq = best->sched->Add(std::move(req.spec), req.stream.get());
        best->streams[seq] = req.stream.get();
        live_[req.handle] = Live{best, seq, req.stream};
      }
      for (uint64_t handle : cancels_) {
        auto it = live_.find(handle);
        if (it == live_.end()) continue;
        Pipeline* p = it->second.pipeline;
        if (p->sched && p->streams.count(it->second.seq)) p->sched->Cancel(it->second.seq);
      }
      cancels_.clear();
      const auto now = Clock::now();
      for (auto& [name, p] : pipelines_) {
        for (const auto& [step, sent] : p->in_flight) {
          if (now - sent > options_.step_timeout) {
            SetDown(p.get(), absl::StrCat("step ", step, " got no result within ", options_.step_timeout.count(), " ms"));
            break;
          }
        }
        if (p->state == Pipeline::State::kUp) Schedule(p.get());
      }
      // Forget finished requests.
      for (auto it = live_.begin(); it != live_.end();) {
        if (it->second.stream->finished()) {
          Pipeline* p = it->second.pipeline;
          p->streams.erase(it->second.seq);
          it = live_.erase(it);
        } else {
          ++it;
        }
      }
      ReapSends();
      UpdateGauges();
    }
    auto m = transport_->Receive(milliseconds(20));
    if (m.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      HandleResult(*m);
    }
  }
}

void Engine::HeartbeatLoop() {
  while (!stop_) {
    struct Probe {
      std::string pipeline;
      std::pair<int32_t, int32_t> key;
      std::shared_ptr<v1::Worker::Stub> stub;
      uint64_t epoch;
    };
    std::vector<Probe> probes;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [name, p] : pipelines_) {
        for (auto& [key, m] : p->members) probes.push_back({name, key, m.stub, m.reg.epoch()});
      }
    }
    std::vector<bool> ok(probes.size(), false);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < probes.size(); ++i) {
      threads.emplace_back([&, i] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + options_.heartbeat);
        v1::HealthResponse h;
        grpc::Status s = probes[i].stub->Health(&ctx, v1::HealthRequest(), &h);
        ok[i] = s.ok() && h.epoch() == probes[i].epoch && h.state() == v1::HealthResponse::SERVING;
      });
    }
    for (auto& t : threads) t.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto now = Clock::now();
      for (size_t i = 0; i < probes.size(); ++i) {
        auto pit = pipelines_.find(probes[i].pipeline);
        if (pit == pipelines_.end()) continue;
        auto mit = pit->second->members.find(probes[i].key);
        if (mit == pit->second->members.end() || mit->second.reg.epoch() != probes[i].epoch) continue;
        if (ok[i]) mit->second.last_ok = now;
      }
      for (auto& [name, p] : pipelines_) {
        bool healthy = true;
        std::string why;
        for (auto& [key, m] : p->members) {
          if (now - m.last_ok > options_.down_after) {
            healthy = false;
            why = absl::StrCat("stage ", key.first, " rank ", key.second, " has not answered for ",
                               std::chrono::duration_cast<milliseconds>(now - m.last_ok).count(), " ms");
            break;
          }
        }
        if (!healthy && (p->state == Pipeline::State::kUp || p->state == Pipeline::State::kWarming)) {
          SetDown(p.get(), why);
        } else if (healthy && p->Complete() &&
                   (p->state == Pipeline::State::kForming || p->state == Pipeline::State::kDown)) {
          TryBringUp(p.get());
        }
      }
    }
    transport_->Interrupt();
    for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(options_.heartbeat / 10);
  }
}

void Engine::Drain(milliseconds budget) {
  draining_ = true;
  const auto deadline = Clock::now() + budget;
  while (Clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (live_.empty() && inbox_.empty()) return;
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

}  // namespace strata::router
