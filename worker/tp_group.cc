#include "worker/tp_group.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "transport/address.h"
#include "worker/gloo_communicator.h"
#include "worker/nccl_communicator.h"

namespace strata::worker {

using Clock = std::chrono::steady_clock;

TimedCommunicator::TimedCommunicator(std::unique_ptr<Communicator> inner)
    : rank_(inner->rank()), size_(inner->size()), inner_(std::move(inner)) {}

void TimedCommunicator::Install(std::unique_ptr<Communicator> inner, std::string why_none) {
  inner_.reset();  // the old group's connections close before anything else
  inner_ = std::move(inner);
  failure_ = inner_ ? absl::OkStatus()
                    : absl::UnavailableError(why_none.empty() ? "no tensor-parallel group formed" : why_none);
}

template <typename F>
absl::Status TimedCommunicator::Call(F&& f) {
  if (!failure_.ok()) return failure_;
  if (!inner_) return absl::UnavailableError("no tensor-parallel group formed");
  const auto start = Clock::now();
  absl::Status s = f();
  seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  if (s.ok()) return s;
  // UNAVAILABLE whatever the communicator said (NCCL says INTERNAL): the
  // group is broken until the next epoch, so the router must take the
  // pipeline down and bring it up again, not fail step after step.
  failure_ = absl::UnavailableError(absl::StrCat("the tensor-parallel group failed earlier in this epoch: ",
                                                 s.message()));
  return absl::UnavailableError(s.message());
}

absl::Status TimedCommunicator::AllReduceSum(float* data, int64_t n) {
  return Call([&] { return inner_->AllReduceSum(data, n); });
}

absl::Status TimedCommunicator::AllGather(const float* in, int64_t n, float* out) {
  return Call([&] { return inner_->AllGather(in, n, out); });
}

absl::Status TimedCommunicator::GatherColumnsToRoot(const float* in, int64_t rows, int64_t cols, float* out) {
  return Call([&] { return inner_->GatherColumnsToRoot(in, rows, cols, out); });
}

absl::Status TimedCommunicator::Synchronize() {
  return Call([&] { return inner_->Synchronize(); });
}

absl::StatusOr<std::unique_ptr<TpGroup>> TpGroup::Create(const model::StagePlace& place, kernels::Backend* backend,
                                                         const TpGroupOptions& o) {
  if (place.tp_size() == 1) return std::unique_ptr<TpGroup>(new TpGroup(place, backend, o, {}));
  STRATA_ASSIGN_OR_RETURN(transport::HostPort store, transport::ParseHostPort(o.store, "--tp-store"));
  std::unique_ptr<TpGroup> g(new TpGroup(place, backend, o, store));
  if (place.is_stage_leader()) {
    STRATA_ASSIGN_OR_RETURN(g->store_server_, TcpStoreServer::Start(store.host, store.port, o.tls));
  }
  g->comm_ = std::make_unique<TimedCommunicator>(place.tp_rank(), place.tp_size());
  return g;
}

absl::Status TpGroup::Form(uint64_t epoch) {
  if (!comm_) return absl::OkStatus();
  comm_->Install(nullptr);  // no collective of the old epoch after this
  absl::StatusOr<std::unique_ptr<Communicator>> inner = Meet(epoch);
  if (!inner.ok()) {
    comm_->Install(nullptr, absl::StrCat("the tensor-parallel group of epoch ", epoch,
                                         " did not form: ", inner.status().message()));
    return inner.status();
  }
  comm_->Install(std::move(*inner));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> TpGroup::Meet(uint64_t epoch) {
  // A fresh connection each epoch: rank 0 (and its store) may have restarted.
  store_.reset();
  STRATA_ASSIGN_OR_RETURN(store_, TcpStoreClient::Connect(store_address_.host, store_address_.port, options_.timeout,
                                                          options_.tls));
  const std::string group = absl::StrCat(options_.pipeline, "/stage", place_.stage(), "/epoch", epoch);
  if (void* stream = backend_->NativeStream()) {
    // A device backend: NCCL on its stream, the unique id through the store.
    std::string id;
    if (place_.is_stage_leader()) {
      STRATA_ASSIGN_OR_RETURN(id, NewNcclUniqueId());
      STRATA_RETURN_IF_ERROR(store_->Set(group + "/nccl_id", id));
    } else {
      STRATA_ASSIGN_OR_RETURN(id, store_->Get(group + "/nccl_id", options_.timeout));
    }
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> nccl,
                            NcclCommunicator::Create(id, place_.tp_rank(), place_.tp_size(),
                                                     static_cast<cudaStream_t>(stream)));
    return std::unique_ptr<Communicator>(std::move(nccl));
  }
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<GlooCommunicator> gloo,
                          GlooCommunicator::Create(store_.get(), group, options_.host, place_.tp_rank(),
                                                   place_.tp_size(), options_.timeout));
  return std::unique_ptr<Communicator>(std::move(gloo));
}

}  // namespace strata::worker
