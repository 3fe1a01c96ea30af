#include "worker/worker_server.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "kernels/backend_factory.h"
#include "kernels/cuda/cuda_backend.h"
#include "model/checkpoint.h"
#include "model/file_system.h"
#include "nlohmann/json.hpp"
#include "strata/v1/worker.grpc.pb.h"
#include "base/status_macros.h"
#include "transport/ucx_transport.h"
#include "worker/communicator.h"
#include "worker/gloo_communicator.h"
#include "worker/nccl_communicator.h"
#include "worker/stage_executor.h"
#include "worker/step_runner.h"
#include "worker/tcp_store.h"
#include "worker/worker_metrics.h"

namespace strata::worker {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
namespace pb = ::strata::v1;

namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

void Log(const std::string& who, const std::string& what) { std::cerr << who << ": " << what << std::endl; }

}  // namespace

struct WorkerServer::State : public pb::Worker::Service {
  WorkerOptions o;
  std::string who;  // log prefix
  uint64_t epoch = 0;
  std::unique_ptr<WorkerMetrics> metrics;
  std::unique_ptr<model::Checkpoint> checkpoint;
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<TcpStoreServer> store_server;
  std::unique_ptr<TcpStoreClient> store;
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<StageExecutor> executor;
  std::unique_ptr<kernels::KvCache> cache;
  std::unique_ptr<StepRunner> runner;
  std::unique_ptr<transport::UcxTransport> transport;
  std::unique_ptr<grpc::Server> grpc_server;
  int control_port = 0;
  int64_t kv_blocks = 0;

  std::atomic<int> state{pb::HealthResponse::LOADING};
  std::atomic<bool> stop{false};
  std::thread data_thread, register_thread;
  std::mutex mu;  // guards the fields below
  std::condition_variable cv;
  std::string result_address;  // from the flag or the router
  int next_peer = -1, result_peer = -1;
  uint64_t abort_up_to = 0;
  std::set<uint64_t> aborted_sequences;
  Clock::time_point last_message = Clock::now();
  bool finished = false;
  // Counters for Stats (the metrics hold the same numbers).
  std::atomic<uint64_t> prefill_steps{0}, decode_steps{0}, failed_steps{0}, rows{0}, aborted{0};
  std::atomic<uint64_t> bytes_sent{0}, bytes_received{0};
  std::atomic<double> step_seconds{0};
  std::atomic<int64_t> kv_used{0};
  // The activations of the latest step, still travelling to the next stage
  // while this worker computes the next step (data thread only).
  struct InFlight {
    std::unique_ptr<transport::PendingSend> send;
    std::vector<uint8_t> buffer;
    uint64_t step_id = 0;
  };
  std::unique_ptr<InFlight> in_flight;

  // --- control plane ---
  grpc::Status Health(grpc::ServerContext*, const pb::HealthRequest*, pb::HealthResponse* r) override {
    r->set_state(static_cast<pb::HealthResponse::State>(state.load()));
    r->set_epoch(epoch);
    r->set_steps_completed(prefill_steps + decode_steps);
    return grpc::Status::OK;
  }

  void Identity(pb::WorkerIdentity* id) const {
    id->set_pipeline(o.pipeline);
    id->set_stage(o.stage);
    id->set_num_stages(o.num_stages);
    id->set_tp_rank(o.tp_rank);
    id->set_tp_size(o.tp_size);
    id->set_first_layer(executor->spec().first_layer);
    id->set_last_layer(executor->spec().last_layer);
    id->set_has_embedding(executor->spec().has_embedding);
    id->set_has_lm_head(executor->spec().has_lm_head);
  }

  grpc::Status Stats(grpc::ServerContext*, const pb::StatsRequest*, pb::StatsResponse* r) override {
    Identity(r->mutable_identity());
    r->set_epoch(epoch);
    r->set_prefill_steps(prefill_steps);
    r->set_decode_steps(decode_steps);
    r->set_failed_steps(failed_steps);
    r->set_rows(rows);
    r->set_step_seconds(step_seconds);
    r->set_activation_bytes_sent(bytes_sent);
    r->set_activation_bytes_received(bytes_received);
    r->set_messages_rejected(transport->stats().messages_rejected);
    r->set_steps_aborted(aborted);
    r->set_kv_blocks_total(kv_blocks);
    r->set_kv_blocks_used(kv_used);
    r->set_weight_bytes(executor->weight_bytes());
    return grpc::Status::OK;
  }

  grpc::Status Drain(grpc::ServerContext*, const pb::DrainRequest*, pb::DrainResponse* r) override {
    state = pb::HealthResponse::DRAINING;
    r->set_queued_steps(0);
    return grpc::Status::OK;
  }

  grpc::Status Abort(grpc::ServerContext*, const pb::AbortRequest* req, pb::AbortResponse* r) override {
    if (req->sequence_ids_size() > 100000) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "sequence_ids: more than 100000 ids");
    }
    std::lock_guard<std::mutex> lock(mu);
    abort_up_to = std::max(abort_up_to, req->up_to_step_id());
    if (aborted_sequences.size() > 1000000) aborted_sequences.clear();
    aborted_sequences.insert(req->sequence_ids().begin(), req->sequence_ids().end());
    r->set_steps_dropped(0);  // counted as they are dropped (Stats.steps_aborted)
    return grpc::Status::OK;
  }

  // --- data plane ---
  bool Aborted(const transport::Message& m) {
    std::lock_guard<std::mutex> lock(mu);
    if (m.header.step_id <= abort_up_to && abort_up_to > 0) return true;
    if (aborted_sequences.empty()) return false;
    auto plan = transport::DecodePlan(m.plan(), m.header.plan_bytes);
    if (!plan.ok()) return false;
    for (const auto& s : plan->sequences) {
      if (aborted_sequences.count(s.seq_id)) return true;
    }
    return false;
  }

  absl::StatusOr<int> Peer(const std::string& address, int* cached) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (*cached >= 0) return *cached;
    }
    STRATA_ASSIGN_OR_RETURN(transport::HostPort hp, transport::ParseHostPort(address, "peer"));
    STRATA_ASSIGN_OR_RETURN(int id, transport->Connect(hp));
    std::lock_guard<std::mutex> lock(mu);
    *cached = id;
    return id;
  }

  absl::Status SendTo(const std::string& address, int* cached, const transport::WireHeader& h,
                      const std::vector<transport::Bytes>& parts) {
    STRATA_ASSIGN_OR_RETURN(int peer, Peer(address, cached));
    const auto start = Clock::now();
    absl::Status s = transport->Send(peer, h, parts, milliseconds(o.step_timeout_ms));
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      *cached = -1;  // reconnect next time (the peer may have restarted)
      return s;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    const uint64_t bytes = h.plan_bytes + h.payload_bytes;
    bytes_sent += bytes;
    if (metrics) {
      metrics->activation_bytes_sent->Increment(static_cast<double>(bytes));
      metrics->activation_transfer_seconds->Observe(secs);
    }
    return absl::OkStatus();
  }

  // Waits for the previous activations send; a failure fails that step.
  void FinishInFlight() {
    if (!in_flight) return;
    std::unique_ptr<InFlight> f = std::move(in_flight);
    absl::Status s = transport->Wait(f->send.get(), milliseconds(o.step_timeout_ms));
    if (s.ok()) {
      bytes_sent += f->buffer.size();
      if (metrics) {
        metrics->activation_bytes_sent->Increment(static_cast<double>(f->buffer.size()));
        metrics->activation_transfer_seconds->Observe(f->send->transfer_seconds);
      }
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      next_peer = -1;  // reconnect next time (the next stage may have restarted)
    }
    StepFailed(f->step_id, absl::UnavailableError(absl::StrCat("forwarding activations: ", s.message())));
  }

  void StepFailed(uint64_t step_id, const absl::Status& status) {
    failed_steps += 1;
    if (metrics) metrics->failed_steps->Increment();
    Log(who, absl::StrCat("step ", step_id, " failed: ", status.ToString()));
    if (o.tp_rank == 0) {  // rank 0 of the stage tells the router
      transport::StepResult r;
      r.step_id = step_id;
      r.error = absl::StrCat("pipeline ", o.pipeline, " stage ", o.stage, ": ", status.ToString());
      SendResult(r);
    }
  }

  std::string ResultAddress() {
    std::lock_guard<std::mutex> lock(mu);
    return result_address;
  }

  void SendResult(const transport::StepResult& r) {
    const std::string addr = ResultAddress();
    if (addr.empty()) {
      Log(who, absl::StrCat("step ", r.step_id, ": no result address yet (no router answered); result dropped"));
      return;
    }
    const std::string bytes = transport::EncodeResult(r);
    transport::WireHeader h;
    h.type = static_cast<uint16_t>(transport::MessageType::kStepResult);
    h.step_id = r.step_id;
    h.epoch = epoch;
    h.src_stage = static_cast<int16_t>(o.stage);
    h.src_rank = static_cast<int16_t>(o.tp_rank);
    h.payload_bytes = bytes.size();
    absl::Status s = SendTo(addr, &result_peer, h, {{bytes.data(), bytes.size()}});
    if (!s.ok()) Log(who, absl::StrCat("step ", r.step_id, ": sending the result failed: ", s.message()));
  }

  void Handle(const transport::Message& m) {
    bytes_received += m.data.size();
    if (metrics) metrics->activation_bytes_received->Increment(static_cast<double>(m.data.size()));
    if (Aborted(m)) {
      aborted += 1;
      if (metrics) metrics->steps_aborted->Increment();
      return;
    }
    const auto start = Clock::now();
    absl::StatusOr<StepOutput> out = runner->Run(m);
    absl::Status status = out.status();
    if (status.ok()) {
      const double secs = std::chrono::duration<double>(Clock::now() - start).count();
      step_seconds = step_seconds + secs;
      rows += out->rows;
      kv_used = out->kv_blocks_used;
      (out->is_prefill ? prefill_steps : decode_steps) += 1;
      if (metrics) {
        (out->is_prefill ? metrics->prefill_step_seconds : metrics->decode_step_seconds)->Observe(secs);
        (out->is_prefill ? metrics->prefill_steps : metrics->decode_steps)->Increment();
        metrics->rows->Increment(static_cast<double>(out->rows));
        metrics->kv_blocks_used->Set(static_cast<double>(out->kv_blocks_used));
      }
      if (!executor->spec().has_lm_head) {
        transport::WireHeader h;
        h.type = static_cast<uint16_t>(transport::MessageType::kActivations);
        h.step_id = m.header.step_id;
        h.epoch = epoch;
        h.src_stage = static_cast<int16_t>(o.stage);
        h.src_rank = static_cast<int16_t>(o.tp_rank);
        h.plan_bytes = out->plan_bytes;
        h.payload_bytes = out->activations.size() - out->plan_bytes;
        // One send in flight: the previous step's must be done before this
        // one goes (and its buffer is reused).
        FinishInFlight();
        auto f = std::make_unique<InFlight>();
        f->buffer = std::move(out->activations);
        f->step_id = m.header.step_id;
        absl::StatusOr<int> peer = Peer(o.next_stage, &next_peer);
        if (peer.ok()) {
          auto send = transport->SendAsync(*peer, h, {{f->buffer.data(), f->buffer.size()}});
          if (send.ok()) {
            f->send = std::move(*send);
            in_flight = std::move(f);
            return;
          }
          peer = send.status();
        }
        {
          std::lock_guard<std::mutex> lock(mu);
          next_peer = -1;
        }
        status = absl::UnavailableError(absl::StrCat("forwarding activations: ", peer.status().message()));
      } else if (o.tp_rank == 0) {
        SendResult(out->result);
        return;
      } else {
        return;
      }
    }
    StepFailed(m.header.step_id, status);
  }

  void DataLoop() {
    while (!stop) {
      auto m = transport->Receive(milliseconds(100));
      if (!m.ok()) {
        FinishInFlight();  // idle: surface a failed send now
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        last_message = Clock::now();
      }
      Handle(*m);
    }
    FinishInFlight();
  }

  // --- registration ---
  void RegisterLoop() {
    auto channel = grpc::CreateChannel(o.router, grpc::InsecureChannelCredentials());
    auto stub = pb::Fleet::NewStub(channel);
    pb::RegisterRequest req;
    Identity(req.mutable_identity());
    req.set_model_name(o.model_name);
    const model::LlamaConfig& c = executor->config();
    pb::ModelShape* shape = req.mutable_shape();
    shape->set_hidden_size(c.hidden_size);
    shape->set_intermediate_size(c.intermediate_size);
    shape->set_num_layers(c.num_layers);
    shape->set_num_attention_heads(c.num_heads);
    shape->set_num_key_value_heads(c.num_kv_heads);
    shape->set_head_dim(c.head_dim);
    shape->set_vocab_size(c.vocab_size);
    shape->set_rms_norm_eps(c.rms_norm_eps);
    shape->set_rope_theta(c.rope_theta);
    shape->set_max_position_embeddings(c.max_position_embeddings);
    shape->set_tie_word_embeddings(c.tie_word_embeddings);
    shape->set_bos_token_id(c.bos_token_id);
    for (int64_t e : c.eos_token_ids) shape->add_eos_token_ids(e);
    if (c.rope_scaling) {
      shape->mutable_rope_scaling()->set_factor(c.rope_scaling->factor);
      shape->mutable_rope_scaling()->set_low_freq_factor(c.rope_scaling->low_freq_factor);
      shape->mutable_rope_scaling()->set_high_freq_factor(c.rope_scaling->high_freq_factor);
      shape->mutable_rope_scaling()->set_original_max_position_embeddings(
          c.rope_scaling->original_max_position_embeddings);
    }
    req.set_backend(o.backend.name);
    req.set_control_address(absl::StrCat(o.host, ":", control_port));
    req.set_data_address(transport->address());
    if (metrics) req.set_metrics_address(absl::StrCat(o.host, ":", metrics->port()));
    req.set_epoch(epoch);
    req.set_kv_num_blocks(kv_blocks);
    req.set_kv_block_size(o.block_size);
    req.set_weight_bytes(executor->weight_bytes());
    int attempt = 0;
    while (!stop) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      pb::RegisterResponse resp;
      grpc::Status s = stub->Register(&ctx, req, &resp);
      if (s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (result_address.empty()) result_address = resp.result_address();
        Log(who, absl::StrCat("registered with the router at ", o.router, " (epoch ", epoch, ")"));
        return;
      }
      if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
          s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        Log(who, absl::StrCat("the router refused this worker: ", s.error_message()));
        state = pb::HealthResponse::FAILED;
        return;
      }
      if (++attempt % 10 == 1) Log(who, absl::StrCat("router ", o.router, " not reachable yet: ", s.error_message()));
      for (int i = 0; i < 10 && !stop; ++i) std::this_thread::sleep_for(milliseconds(50));
    }
  }
};

WorkerServer::WorkerServer(std::unique_ptr<State> state) : s_(std::move(state)) {}

WorkerServer::~WorkerServer() { Shutdown(); }

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(const WorkerOptions& o) {
  auto s = std::make_unique<State>();
  s->o = o;
  s->who = absl::StrCat("strata-worker[", o.pipeline, " stage ", o.stage, " rank ", o.tp_rank, "]");
  std::random_device rd;
  s->epoch = (static_cast<uint64_t>(rd()) << 32 | rd()) ^
             static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  if (s->epoch == 0) s->epoch = 1;

  if (o.metrics_port >= 0) {
    s->metrics = std::make_unique<WorkerMetrics>(WorkerLabels{o.model_name, o.pipeline, o.stage, o.tp_rank});
    STRATA_RETURN_IF_ERROR(s->metrics->Serve(o.host, o.metrics_port));
  }

  STRATA_ASSIGN_OR_RETURN(s->checkpoint, model::Checkpoint::Open(model::PosixFileSystem(), o.model_dir));
  const model::LlamaConfig& c = s->checkpoint->config();
  if (o.num_stages > c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("--num-stages ", o.num_stages, " is more than the model's ",
                                                   c.num_layers, " layers"));
  }
  StageSpec spec;
  spec.first_layer = o.first_layer >= 0 ? o.first_layer : c.num_layers * o.stage / o.num_stages;
  spec.last_layer = o.last_layer >= 0 ? o.last_layer : c.num_layers * (o.stage + 1) / o.num_stages;
  if (spec.last_layer > c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("--layers ", spec.first_layer, ":", spec.last_layer,
                                                   " goes past the model's ", c.num_layers, " layers"));
  }
  spec.has_embedding = o.stage == 0;
  spec.has_lm_head = o.stage + 1 == o.num_stages;
  spec.tp_rank = o.tp_rank;
  spec.tp_size = o.tp_size;
  STRATA_RETURN_IF_ERROR(ValidateTp(c, o.tp_rank, o.tp_size));

  STRATA_ASSIGN_OR_RETURN(s->backend, kernels::MakeBackend(o.backend));

  if (o.tp_size > 1) {
    STRATA_ASSIGN_OR_RETURN(transport::HostPort store, transport::ParseHostPort(o.tp_store, "--tp-store"));
    if (o.tp_rank == 0) {
      STRATA_ASSIGN_OR_RETURN(s->store_server, TcpStoreServer::Start(store.host, store.port));
    }
    STRATA_ASSIGN_OR_RETURN(s->store, TcpStoreClient::Connect(store.host, store.port, milliseconds(60000)));
    const std::string group = absl::StrCat(o.pipeline, "/stage", o.stage);
    if (o.backend.name == "cuda") {
      std::string id;
      if (o.tp_rank == 0) {
        STRATA_ASSIGN_OR_RETURN(id, NewNcclUniqueId());
        STRATA_RETURN_IF_ERROR(s->store->Set(group + "/nccl_id", id));
      } else {
        STRATA_ASSIGN_OR_RETURN(id, s->store->Get(group + "/nccl_id", milliseconds(60000)));
      }
      auto* cuda = static_cast<kernels::cuda::CudaBackend*>(s->backend.get());
      STRATA_ASSIGN_OR_RETURN(s->comm, NcclCommunicator::Create(id, o.tp_rank, o.tp_size, cuda->stream()));
    } else {
      STRATA_ASSIGN_OR_RETURN(s->comm, GlooCommunicator::Create(s->store.get(), group, o.host, o.tp_rank, o.tp_size,
                                                                milliseconds(o.step_timeout_ms)));
    }
  }
  STRATA_ASSIGN_OR_RETURN(s->executor, StageExecutor::Load(s->backend.get(), *s->checkpoint, spec, s->comm.get()));
  Log(s->who, absl::StrCat("loaded layers [", spec.first_layer, ", ", spec.last_layer, ") of ", o.model_dir,
                           ", TP rank ", o.tp_rank, " of ", o.tp_size, ": ", s->executor->weight_bytes(),
                           " checkpoint bytes"));

  const int64_t value_bytes = (o.backend.name == "reference" || o.backend.kv_dtype == "f32") ? 4 : 2;
  const int64_t per_block = s->executor->KvBytesPerBlock(o.block_size, value_bytes);
  s->kv_blocks = o.kv_blocks > 0 ? o.kv_blocks : (o.kv_memory_mb << 20) / per_block;
  if (s->kv_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-memory-mb ", o.kv_memory_mb, " is less than one KV block (",
                                                   per_block, " bytes)"));
  }
  STRATA_ASSIGN_OR_RETURN(s->cache, s->backend->AllocateKvCache(s->executor->KvShape(s->kv_blocks, o.block_size)));
  s->runner = std::make_unique<StepRunner>(s->executor.get(), s->cache.get());
  if (s->metrics) {
    s->metrics->kv_blocks_total->Set(static_cast<double>(s->kv_blocks));
    s->metrics->weight_bytes_loaded->Set(static_cast<double>(s->executor->weight_bytes()));
    s->metrics->device_memory_bytes->Set(static_cast<double>(s->executor->weight_bytes() + s->kv_blocks * per_block));
  }

  transport::UcxOptions uo;
  uo.listen = {o.host, o.data_port};
  uo.peer_failure_detection = o.ucx_peer_errors;
  STRATA_ASSIGN_OR_RETURN(s->transport, transport::UcxTransport::Create(uo));
  s->result_address = o.result_address;

  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(o.host, ":", o.control_port), grpc::InsecureServerCredentials(),
                           &s->control_port);
  builder.SetMaxReceiveMessageSize(4 << 20);
  builder.RegisterService(s.get());
  s->grpc_server = builder.BuildAndStart();
  if (s->grpc_server == nullptr || s->control_port == 0) {
    return absl::UnavailableError(absl::StrCat("control plane cannot listen on ", o.host, ":", o.control_port));
  }
  State* raw = s.get();
  s->data_thread = std::thread([raw] { raw->DataLoop(); });
  s->state = pb::HealthResponse::SERVING;
  if (s->metrics) s->metrics->up->Set(1);
  if (!o.router.empty()) s->register_thread = std::thread([raw] { raw->RegisterLoop(); });

  std::unique_ptr<WorkerServer> server(new WorkerServer(std::move(s)));
  if (!o.ready_file.empty()) {
    nlohmann::json j = {{"data_address", server->data_address()},
                        {"control_address", server->control_address()},
                        {"metrics_address", server->metrics_address()},
                        {"epoch", server->epoch()},
                        {"kv_blocks", server->kv_blocks()},
                        {"block_size", o.block_size},
                        {"weight_bytes", server->s_->executor->weight_bytes()}};
    const std::string tmp = o.ready_file + ".tmp";
    std::ofstream(tmp) << j.dump() << "\n";
    if (std::rename(tmp.c_str(), o.ready_file.c_str()) != 0) {
      return absl::UnavailableError(absl::StrCat("--ready-file: cannot write ", o.ready_file));
    }
  }
  Log(server->s_->who, absl::StrCat("serving: data ", server->data_address(), ", control ", server->control_address(),
                                    ", ", server->kv_blocks(), " KV blocks of ", o.block_size, " tokens"));
  return server;
}

std::string WorkerServer::data_address() const { return s_->transport->address(); }
std::string WorkerServer::control_address() const { return absl::StrCat(s_->o.host, ":", s_->control_port); }
std::string WorkerServer::metrics_address() const {
  return s_->metrics ? absl::StrCat(s_->o.host, ":", s_->metrics->port()) : "";
}
uint64_t WorkerServer::epoch() const { return s_->epoch; }
int64_t WorkerServer::kv_blocks() const { return s_->kv_blocks; }

void WorkerServer::Drain(int quiet_ms, int budget_ms) {
  s_->state = pb::HealthResponse::DRAINING;
  const auto deadline = Clock::now() + milliseconds(budget_ms);
  while (Clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      if (Clock::now() - s_->last_message > milliseconds(quiet_ms)) break;
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  Shutdown();
}

void WorkerServer::Wait() {
  std::unique_lock<std::mutex> lock(s_->mu);
  s_->cv.wait(lock, [&] { return s_->finished; });
}

void WorkerServer::Shutdown() {
  if (!s_) return;
  {
    std::lock_guard<std::mutex> lock(s_->mu);
    if (s_->finished) return;
  }
  s_->stop = true;
  if (s_->metrics) s_->metrics->up->Set(0);
  if (s_->register_thread.joinable()) s_->register_thread.join();
  if (s_->data_thread.joinable()) s_->data_thread.join();
  if (s_->grpc_server) s_->grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  std::lock_guard<std::mutex> lock(s_->mu);
  s_->finished = true;
  s_->cv.notify_all();
}

}  // namespace strata::worker
