#include "router/worker_control.h"

#include "absl/strings/str_cat.h"

#include <map>
#include <mutex>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "strata/v1/worker.grpc.pb.h"

namespace strata::router {
namespace {

class GrpcWorkerControl : public WorkerControl {
 public:
  explicit GrpcWorkerControl(std::shared_ptr<grpc::ChannelCredentials> credentials)
      : credentials_(std::move(credentials)), abort_thread_([this] { DrainAborts(); }) {}
  ~GrpcWorkerControl() override {
    abort_cq_.Shutdown();
    abort_thread_.join();
  }

  std::vector<Probe> ProbeAll(const std::vector<ProbeTarget>& targets, std::chrono::milliseconds timeout) override {
    struct Call {
      grpc::ClientContext ctx;
      v1::HealthResponse response;
      grpc::Status status;
      std::unique_ptr<grpc::ClientAsyncResponseReader<v1::HealthResponse>> reader;
    };
    grpc::CompletionQueue cq;
    std::vector<std::unique_ptr<Call>> calls(targets.size());
    const auto deadline = std::chrono::system_clock::now() + timeout;
    for (size_t i = 0; i < targets.size(); ++i) {
      calls[i] = std::make_unique<Call>();
      calls[i]->ctx.set_deadline(deadline);
      calls[i]->reader = Stub(targets[i].control_address)->AsyncHealth(&calls[i]->ctx, v1::HealthRequest(), &cq);
      calls[i]->reader->Finish(&calls[i]->response, &calls[i]->status, reinterpret_cast<void*>(i));
    }
    std::vector<Probe> alive(targets.size(), Probe::kSilent);
    // Every call ends by its deadline, so this loop ends too.
    for (size_t done = 0; done < targets.size(); ++done) {
      void* tag = nullptr;
      bool ok = false;
      if (!cq.Next(&tag, &ok)) break;
      const size_t i = reinterpret_cast<size_t>(tag);
      const Call& c = *calls[i];
      if (!ok) continue;
      if (c.status.ok()) {
        if (c.response.epoch() != targets[i].epoch) {
          alive[i] = Probe::kGone;  // a restarted worker answers at that address
        } else if (c.response.state() == v1::HealthResponse::SERVING) {
          alive[i] = Probe::kAlive;
        } else if (c.response.state() == v1::HealthResponse::DRAINING) {
          alive[i] = Probe::kDraining;
        }
      } else if (c.status.error_code() == grpc::StatusCode::UNAVAILABLE) {
        alive[i] = Probe::kGone;  // connection refused or reset: no process there
      }
    }
    cq.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq.Next(&tag, &ok)) {
    }
    return alive;
  }

  void AbortAll(const std::vector<std::string>& addresses, uint64_t up_to_step_id) override {
    for (const std::string& address : addresses) {
      auto* call = new AbortCall;  // freed when its completion is drained
      call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
      v1::AbortRequest request;
      request.set_up_to_step_id(up_to_step_id);
      call->reader = Stub(address)->AsyncAbort(&call->ctx, request, &abort_cq_);
      call->reader->Finish(&call->response, &call->status, call);
    }
  }

 private:
  struct AbortCall {
    grpc::ClientContext ctx;
    v1::AbortResponse response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<v1::AbortResponse>> reader;
  };

  void DrainAborts() {
    void* tag = nullptr;
    bool ok = false;
    while (abort_cq_.Next(&tag, &ok)) delete static_cast<AbortCall*>(tag);
  }

  absl::Status SetDataKeyAll(const std::vector<std::string>& addresses, uint64_t key_id, const std::string& key,
                             std::chrono::milliseconds timeout) override {
    struct Call {
      grpc::ClientContext ctx;
      v1::SetDataKeyResponse response;
      grpc::Status status;
      std::unique_ptr<grpc::ClientAsyncResponseReader<v1::SetDataKeyResponse>> reader;
    };
    v1::SetDataKeyRequest req;
    req.set_key_id(key_id);
    req.set_key(key);
    grpc::CompletionQueue cq;
    std::vector<std::unique_ptr<Call>> calls(addresses.size());
    const auto deadline = std::chrono::system_clock::now() + timeout;
    for (size_t i = 0; i < addresses.size(); ++i) {
      calls[i] = std::make_unique<Call>();
      calls[i]->ctx.set_deadline(deadline);
      calls[i]->reader = Stub(addresses[i])->AsyncSetDataKey(&calls[i]->ctx, req, &cq);
      calls[i]->reader->Finish(&calls[i]->response, &calls[i]->status, reinterpret_cast<void*>(i));
    }
    absl::Status first;
    for (size_t done = 0; done < addresses.size(); ++done) {
      void* tag = nullptr;
      bool ok = false;
      if (!cq.Next(&tag, &ok)) break;
      const size_t i = reinterpret_cast<size_t>(tag);
      if (first.ok() && !calls[i]->status.ok()) {
        first = absl::UnavailableError(absl::StrCat("SetDataKey on ", addresses[i], ": ",
                                                    calls[i]->status.error_message()));
      }
    }
    cq.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq.Next(&tag, &ok)) {
    }
    return first;
  }

  void Forget(const std::string& address) override {
    std::shared_ptr<v1::Worker::Stub> old;  // released outside the lock; calls in flight keep their channel
    std::lock_guard<std::mutex> lock(mu_);
    auto it = stubs_.find(address);
    if (it == stubs_.end()) return;
    old = std::move(it->second);
    stubs_.erase(it);
  }

  std::shared_ptr<v1::Worker::Stub> Stub(const std::string& address) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& stub = stubs_[address];
    if (!stub) {
      // Heartbeats must see a worker that came back at once: gRPC's default
      // reconnect backoff (1 s, growing to 120 s) fails calls fast while it
      // waits, which a probe would read as "no process there".
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
      // Its own subchannels: a channel made after Forget must not inherit
      // the old one's connection (and backoff) from gRPC's shared pool.
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      stub = v1::Worker::NewStub(grpc::CreateCustomChannel(address, credentials_, args));
    }
    return stub;
  }

  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<v1::Worker::Stub>> stubs_;
  grpc::CompletionQueue abort_cq_;
  std::thread abort_thread_;
};

}  // namespace

std::unique_ptr<WorkerControl> MakeGrpcWorkerControl(std::shared_ptr<grpc::ChannelCredentials> credentials) {
  if (!credentials) credentials = grpc::InsecureChannelCredentials();
  return std::make_unique<GrpcWorkerControl>(std::move(credentials));
}

}  // namespace strata::router
