#include "worker/worker_server.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/health_check_service_server_builder_option.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "kernels/backend_factory.h"
#include "model/checkpoint.h"
#include "model/file_system.h"
#include "model/stage_place.h"
#include "nlohmann/json.hpp"
#include "base/status_macros.h"
#include "transport/ucx_transport.h"
#include "worker/abort_list.h"
#include "worker/control_service.h"
#include "worker/data_loop.h"
#include "worker/registration.h"
#include "worker/shard.h"
#include "worker/stage_executor.h"
#include "worker/step_runner.h"
#include "worker/tp_group.h"
#include "worker/worker_metrics.h"

namespace strata::worker {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct WorkerServer::Parts {
  WorkerOptions o;
  std::unique_ptr<base::TlsMaterial> control_tls;  // null: plaintext control plane
  std::string who;  // log prefix
  uint64_t epoch = 0;
  std::unique_ptr<model::StagePlace> place;
  std::unique_ptr<WorkerMetrics> metrics;
  // The probes' plaintext grpc.health.v1 (--health-port), up from the start
  // so a loading worker answers NOT_SERVING; null when off.
  grpc::CallbackGenericService unimplemented;  // see ServeHealth
  std::unique_ptr<grpc::Server> health_server;
  int health_port = 0;
  std::unique_ptr<model::Checkpoint> checkpoint;
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<TpGroup> tp;
  std::unique_ptr<StageExecutor> executor;
  int64_t kv_blocks = 0;
  std::unique_ptr<kernels::KvCache> cache;
  std::unique_ptr<StepRunner> runner;
  std::unique_ptr<transport::UcxTransport> transport;
  AbortList aborts;
  std::unique_ptr<DataLoop> data;
  std::unique_ptr<ControlService> control;
  std::unique_ptr<grpc::Server> grpc_server;
  int control_port = 0;
  std::unique_ptr<Registration> registration;
};

namespace {

uint64_t NewEpoch() {
  std::random_device rd;
  const uint64_t e = (static_cast<uint64_t>(rd()) << 32 | rd()) ^
                     static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  return e == 0 ? 1 : e;
}

// --health-port: a server of only the standard health service, plaintext,
// because the kubelet's gRPC probe speaks nothing else; the control port
// stays mutual TLS. It says SERVING or NOT_SERVING and nothing more.
absl::Status ServeHealth(WorkerServer::Parts& s) {
  const WorkerOptions& o = s.o;
  if (o.health_port < 0) return absl::OkStatus();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a taken port fails, never shared
  builder.AddListeningPort(absl::StrCat(o.host, ":", o.health_port), grpc::InsecureServerCredentials(),
                           &s.health_port);
  builder.SetMaxReceiveMessageSize(4 << 10);
  // gRPC 1.51 adds the default health service only as the server starts,
  // and will not build a server that has no service yet. The generic
  // service answers every other method UNIMPLEMENTED, as gRPC would anyway.
  builder.RegisterCallbackGenericService(&s.unimplemented);
  s.health_server = builder.BuildAndStart();
  if (s.health_server == nullptr || s.health_port == 0) {
    return absl::UnavailableError(absl::StrCat("--health-port: cannot listen on ", o.host, ":", o.health_port));
  }
  s.health_server->GetHealthCheckService()->SetServingStatus(false);
  return absl::OkStatus();
}

// The checkpoint, this rank's place, its backend and TP group, its slice of
// the layers and its KV pool.
absl::Status LoadModel(WorkerServer::Parts& s) {
  const WorkerOptions& o = s.o;
  STRATA_ASSIGN_OR_RETURN(s.checkpoint, model::Checkpoint::Open(model::PosixFileSystem(), o.model_dir));
  const model::LlamaConfig& c = s.checkpoint->config();
  if (o.num_stages > c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("--num-stages ", o.num_stages, " is more than the model's ",
                                                   c.num_layers, " layers"));
  }
  auto place = model::StagePlace::CreateHalves(o.stage, o.num_stages, o.tp_rank, o.tp_size, c.num_layers,
                                               o.begin_half, o.end_half);
  if (!place.ok()) return absl::InvalidArgumentError(absl::StrCat("--layers: ", place.status().message()));
  s.place = std::make_unique<model::StagePlace>(*place);
  STRATA_RETURN_IF_ERROR(ValidateTp(c, o.tp_rank, o.tp_size));
  STRATA_ASSIGN_OR_RETURN(s.backend, kernels::MakeBackend(o.backend));
  TpGroupOptions tp;
  tp.pipeline = o.pipeline;
  tp.host = o.host;
  tp.store = o.tp_store;
  tp.timeout = milliseconds(o.step_timeout_ms);
  tp.tls = s.control_tls.get();
  STRATA_ASSIGN_OR_RETURN(s.tp, TpGroup::Create(*s.place, s.backend.get(), tp));
  StageSpec spec{place->first_layer(), place->last_layer(), place->has_embedding(),
                 place->has_lm_head(), place->tp_rank(), place->tp_size(),
                 place->starts_at_mlp(), place->ends_after_attention()};
  spec.movable_begin = o.movable_boundaries && !place->has_embedding();
  spec.movable_end = o.movable_boundaries && !place->has_lm_head();
  STRATA_ASSIGN_OR_RETURN(s.executor,
                          StageExecutor::Load(s.backend.get(), *s.checkpoint, spec, s.tp->communicator()));
  std::cerr << s.who << ": loaded layers [" << model::HalfLayerString(place->begin_half()) << ", "
            << model::HalfLayerString(place->end_half()) << ") of " << o.model_dir
            << (spec.movable_begin || spec.movable_end ? " with the MLP beside each boundary (movable)" : "")
            << ", TP rank " << o.tp_rank << " of " << o.tp_size << ": " << s.executor->weight_bytes()
            << " checkpoint bytes" << std::endl;
  const int64_t per_block = s.executor->KvBytesPerBlock(o.block_size);
  s.kv_blocks = o.kv_blocks > 0 ? o.kv_blocks : (o.kv_memory_mb << 20) / per_block;
  if (s.kv_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-memory-mb ", o.kv_memory_mb, " is less than one KV block (",
                                                   per_block, " bytes)"));
  }
  STRATA_ASSIGN_OR_RETURN(s.cache, s.backend->AllocateKvCache(s.executor->KvShape(s.kv_blocks, o.block_size)));
  s.runner = std::make_unique<StepRunner>(s.executor.get(), s.cache.get());
  s.metrics->kv_blocks_total->Set(static_cast<double>(s.kv_blocks));
  s.metrics->weight_bytes_loaded->Set(static_cast<double>(s.executor->weight_bytes()));
  s.metrics->device_memory_bytes->Set(static_cast<double>(s.executor->weight_bytes() + s.kv_blocks * per_block));
  return absl::OkStatus();
}

// The data plane, the control service and the registration.
absl::Status StartServing(WorkerServer::Parts& s) {
  const WorkerOptions& o = s.o;
  transport::UcxOptions uo;
  uo.listen = {o.host, o.data_port};
  uo.peer_failure_detection = o.ucx_peer_errors;
  uo.tls = s.control_tls.get();
  STRATA_ASSIGN_OR_RETURN(s.transport, transport::UcxTransport::Create(uo));
  // With mutual TLS the data plane takes only messages signed with the key
  // the router sends before its pipeline warms up (SetDataKey): none until then.
  if (s.control_tls) s.transport->SetDataKey(transport::DataKey{});
  DataLoopOptions d;
  d.pipeline = o.pipeline;
  d.await_registration = !o.router.empty();
  d.next_stage = o.next_stage;
  d.result_address = o.result_address;
  d.step_timeout = milliseconds(o.step_timeout_ms);
  d.log_prefix = s.who;
  s.data = std::make_unique<DataLoop>(*s.place, d, s.transport.get(), s.runner.get(), &s.aborts, s.metrics.get(),
                                      s.tp.get());
  const StageSpec& spec = s.executor->spec();
  ControlService::Facts facts{IdentityOf(o.pipeline, *s.place, spec.movable_begin || spec.movable_end), s.epoch,
                              s.kv_blocks, s.executor->weight_bytes()};
  s.control = std::make_unique<ControlService>(facts, &s.aborts, s.metrics.get());
  DataLoop* loop = s.data.get();
  s.control->set_on_abort([loop] { loop->Reconnect(); });
  if (s.health_server) {
    grpc::HealthCheckServiceInterface* health = s.health_server->GetHealthCheckService();
    s.control->set_on_state_change([health](ControlService::State state) {
      const bool serving = state == v1::HealthResponse::SERVING;
      health->SetServingStatus(serving);
      health->SetServingStatus("strata.v1.Worker", serving);
    });
  }
  if (s.control_tls) {
    // The router sends each pipeline epoch's data key over mutual TLS.
    transport::UcxTransport* data_plane = s.transport.get();
    s.control->set_on_data_key([data_plane](uint64_t id, const std::string& bytes) {
      transport::DataKey key;
      key.id = id;
      std::memcpy(key.bytes.data(), bytes.data(), key.bytes.size());
      data_plane->SetDataKey(key);
    });
  }
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a taken port fails, never shared
  auto creds = base::ServerCredentials(s.control_tls.get(), base::ClientCerts::kRequired);
  if (s.control_tls) creds->SetAuthMetadataProcessor(std::make_shared<base::PeerNameCheck>(o.router_name));
  builder.AddListeningPort(absl::StrCat(o.host, ":", o.control_port), creds, &s.control_port);
  builder.SetMaxReceiveMessageSize(4 << 20);
  // The health service lives on --health-port only (EnableDefaultHealthCheckService
  // is process-wide): the control port serves strata.v1.Worker alone.
  builder.SetOption(std::make_unique<grpc::HealthCheckServiceServerBuilderOption>(nullptr));
  builder.RegisterService(s.control.get());
  s.grpc_server = builder.BuildAndStart();
  if (s.grpc_server == nullptr || s.control_port == 0) {
    return absl::UnavailableError(absl::StrCat("control plane cannot listen on ", o.host, ":", o.control_port));
  }
  s.data->Start();
  s.control->set_state(v1::HealthResponse::SERVING);
  s.metrics->up->Set(1);
  if (o.router.empty()) return absl::OkStatus();
  v1::RegisterRequest req;
  *req.mutable_identity() = facts.identity;
  req.set_model_name(o.model_name);
  *req.mutable_shape() = ShapeOf(s.executor->config());
  req.set_backend(o.backend.name);
  req.set_control_address(absl::StrCat(o.host, ":", s.control_port));
  req.set_data_address(s.transport->address());
  if (s.metrics->port() >= 0) req.set_metrics_address(absl::StrCat(o.host, ":", s.metrics->port()));
  req.set_epoch(s.epoch);
  req.set_kv_num_blocks(s.kv_blocks);
  req.set_kv_block_size(o.block_size);
  req.set_weight_bytes(s.executor->weight_bytes());
  DataLoop* data = s.data.get();
  ControlService* control = s.control.get();
  s.registration = std::make_unique<Registration>(
      o.router, req, s.who,
      [data](const v1::RegisterResponse& resp) {
        data->SetResultAddress(resp.result_address());
        data->SetEpochFloor(resp.pipeline_epoch_floor());
      },
      [control](const std::string&) { control->set_state(v1::HealthResponse::FAILED); },
      [control] { return control->last_health_call(); }, milliseconds(o.reregister_after_ms),
      base::ChannelCredentials(s.control_tls.get()));
  return absl::OkStatus();
}

}  // namespace

WorkerServer::WorkerServer(std::unique_ptr<Parts> parts) : p_(std::move(parts)) {}

WorkerServer::~WorkerServer() { Shutdown(); }

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(const WorkerOptions& o) {
  auto s = std::make_unique<Parts>();
  s->o = o;
  s->who = absl::StrCat("strata-worker[", o.pipeline, " stage ", o.stage, " rank ", o.tp_rank, "]");
  s->epoch = NewEpoch();
  if (!o.control_tls.empty()) {
    auto tls = base::LoadTls(o.control_tls, "mtls", true);
    if (!tls.ok()) return tls.status();
    s->control_tls = std::make_unique<base::TlsMaterial>(std::move(*tls));
  }
  s->metrics = std::make_unique<WorkerMetrics>(WorkerLabels{o.model_name, o.pipeline, o.stage, o.tp_rank});
  if (o.metrics_port >= 0) STRATA_RETURN_IF_ERROR(s->metrics->Serve(o.host, o.metrics_port));
  STRATA_RETURN_IF_ERROR(ServeHealth(*s));
  STRATA_RETURN_IF_ERROR(LoadModel(*s));
  STRATA_RETURN_IF_ERROR(StartServing(*s));
  std::unique_ptr<WorkerServer> server(new WorkerServer(std::move(s)));
  STRATA_RETURN_IF_ERROR(server->WriteReadyFile());
  std::cerr << server->p_->who << ": serving: data " << server->data_address() << ", control "
            << server->control_address() << ", " << server->kv_blocks() << " KV blocks of " << o.block_size
            << " tokens" << std::endl;
  return server;
}

absl::Status WorkerServer::WriteReadyFile() const {
  const WorkerOptions& o = p_->o;
  if (o.ready_file.empty()) return absl::OkStatus();
  nlohmann::json j = {{"data_address", data_address()}, {"control_address", control_address()},
                      {"metrics_address", metrics_address()}, {"health_address", health_address()},
                      {"epoch", epoch()},
                      {"kv_blocks", kv_blocks()}, {"block_size", o.block_size},
                      {"weight_bytes", p_->executor->weight_bytes()}};
  const std::string tmp = o.ready_file + ".tmp";
  std::ofstream(tmp) << j.dump() << "\n";
  if (std::rename(tmp.c_str(), o.ready_file.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("--ready-file: cannot write ", o.ready_file));
  }
  return absl::OkStatus();
}

std::string WorkerServer::data_address() const { return p_->transport->address(); }
std::string WorkerServer::control_address() const { return absl::StrCat(p_->o.host, ":", p_->control_port); }
std::string WorkerServer::metrics_address() const {
  return p_->metrics->port() >= 0 ? absl::StrCat(p_->o.host, ":", p_->metrics->port()) : "";
}
std::string WorkerServer::health_address() const {
  return p_->health_server ? absl::StrCat(p_->o.host, ":", p_->health_port) : "";
}
uint64_t WorkerServer::epoch() const { return p_->epoch; }
int64_t WorkerServer::kv_blocks() const { return p_->kv_blocks; }

void WorkerServer::Drain(int quiet_ms, int budget_ms) {
  p_->control->set_state(v1::HealthResponse::DRAINING);
  const auto deadline = Clock::now() + milliseconds(budget_ms);
  while (Clock::now() < deadline && Clock::now() - p_->data->last_message() <= milliseconds(quiet_ms)) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  Shutdown();
}

void WorkerServer::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return finished_; });
}

void WorkerServer::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || !p_) return;
  }
  p_->metrics->up->Set(0);
  p_->registration.reset();
  p_->data->Stop();
  p_->grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  if (p_->health_server) {
    p_->health_server->GetHealthCheckService()->SetServingStatus(false);
    p_->health_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  std::lock_guard<std::mutex> lock(mu_);
  finished_ = true;
  cv_.notify_all();
}

}  // namespace strata::worker
