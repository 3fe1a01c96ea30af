#include "worker/tp_group.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "transport/address.h"
#include "worker/gloo_communicator.h"
#include "worker/nccl_communicator.h"

namespace strata::worker {

using Clock = std::chrono::steady_clock;

namespace {

template <typename F>
absl::Status Timed(double* seconds, F&& f) {
  const auto start = Clock::now();
  absl::Status s = f();
  *seconds += std::chrono::duration<double>(Clock::now() - start).count();
  return s;
}

}  // namespace

absl::Status TimedCommunicator::AllReduceSum(float* data, int64_t n) {
  return Timed(&seconds_, [&] { return inner_->AllReduceSum(data, n); });
}

absl::Status TimedCommunicator::AllGather(const float* in, int64_t n, float* out) {
  return Timed(&seconds_, [&] { return inner_->AllGather(in, n, out); });
}

absl::Status TimedCommunicator::Synchronize() {
  return Timed(&seconds_, [&] { return inner_->Synchronize(); });
}

absl::StatusOr<std::unique_ptr<TpGroup>> TpGroup::Join(const model::StagePlace& place, kernels::Backend* backend,
                                                       const TpGroupOptions& o) {
  std::unique_ptr<TpGroup> g(new TpGroup());
  if (place.tp_size() == 1) return g;
  STRATA_ASSIGN_OR_RETURN(transport::HostPort store, transport::ParseHostPort(o.store, "--tp-store"));
  if (place.is_stage_leader()) {
    STRATA_ASSIGN_OR_RETURN(g->store_server_, TcpStoreServer::Start(store.host, store.port, o.tls));
  }
  STRATA_ASSIGN_OR_RETURN(g->store_, TcpStoreClient::Connect(store.host, store.port, std::chrono::milliseconds(60000), o.tls));
  const std::string group = absl::StrCat(o.pipeline, "/stage", place.stage());
  std::unique_ptr<Communicator> comm;
  if (void* stream = backend->NativeStream()) {
    // A device backend: NCCL on its stream, the unique id through the store.
    std::string id;
    if (place.is_stage_leader()) {
      STRATA_ASSIGN_OR_RETURN(id, NewNcclUniqueId());
      STRATA_RETURN_IF_ERROR(g->store_->Set(group + "/nccl_id", id));
    } else {
      STRATA_ASSIGN_OR_RETURN(id, g->store_->Get(group + "/nccl_id", std::chrono::milliseconds(60000)));
    }
    STRATA_ASSIGN_OR_RETURN(comm, NcclCommunicator::Create(id, place.tp_rank(), place.tp_size(),
                                                           static_cast<cudaStream_t>(stream)));
  } else {
    STRATA_ASSIGN_OR_RETURN(comm, GlooCommunicator::Create(g->store_.get(), group, o.host, place.tp_rank(),
                                                           place.tp_size(), o.timeout));
  }
  g->comm_ = std::make_unique<TimedCommunicator>(std::move(comm));
  return g;
}

}  // namespace strata::worker
