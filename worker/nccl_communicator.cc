#include "worker/nccl_communicator.h"

#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace strata::worker {
namespace {

absl::Status NcclStatus(ncclResult_t r, const char* expr, const char* file, int line) {
  if (r == ncclSuccess || r == ncclInProgress) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(file, ":", line, ": ", expr, " failed: ", ncclGetErrorString(r)));
}
#define NCCL_STATUS(expr) NcclStatus((expr), #expr, __FILE__, __LINE__)

}  // namespace

absl::StatusOr<std::string> NewNcclUniqueId() {
  ncclUniqueId id;
  STRATA_RETURN_IF_ERROR(NCCL_STATUS(ncclGetUniqueId(&id)));
  return std::string(id.internal, NCCL_UNIQUE_ID_BYTES);
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(const std::string& unique_id,
                                                                            int rank, int size,
                                                                            cudaStream_t stream,
                                                                            int timeout_ms) {
  if (unique_id.size() != NCCL_UNIQUE_ID_BYTES) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL unique id has ", unique_id.size(),
                                                   " bytes; expected ", NCCL_UNIQUE_ID_BYTES));
  }
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank, " is outside [0, ", size, ")"));
  }
  ncclUniqueId id;
  std::memcpy(id.internal, unique_id.data(), NCCL_UNIQUE_ID_BYTES);
  // Non-blocking init, so a missing peer ends in a timeout, not a hang.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  STRATA_RETURN_IF_ERROR(NCCL_STATUS(ncclCommInitRankConfig(&comm, size, id, rank, &config)));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  ncclResult_t state = ncclInProgress;
  while (true) {
    ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) state = r;
    if (state != ncclInProgress) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ncclCommAbort(comm);
      return absl::DeadlineExceededError(absl::StrCat("NCCL rank ", rank, " of ", size, " did not see every rank join within ",
                                                      timeout_ms, " ms"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (state != ncclSuccess) {
    ncclCommAbort(comm);
    return absl::InternalError(absl::StrCat("NCCL init of rank ", rank, " of ", size,
                                            " failed: ", ncclGetErrorString(state)));
  }
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(comm, rank, size, stream));
}

NcclCommunicator::~NcclCommunicator() {
  if (!comm_) return;
  // Non-blocking communicator: wait (bounded) for the finalize to complete.
  ncclResult_t state = ncclCommFinalize(comm_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (state == ncclInProgress && std::chrono::steady_clock::now() < deadline) {
    if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (state == ncclSuccess) {
    ncclCommDestroy(comm_);
  } else {
    ncclCommAbort(comm_);
  }
}

absl::Status NcclCommunicator::CheckAsync() {
  ncclResult_t state = ncclSuccess;
  STRATA_RETURN_IF_ERROR(NCCL_STATUS(ncclCommGetAsyncError(comm_, &state)));
  if (state != ncclSuccess && state != ncclInProgress) {
    return absl::UnavailableError(absl::StrCat("NCCL communicator failed: ", ncclGetErrorString(state)));
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllReduceSum(float* data, int64_t n) {
  if (n < 0) return absl::InvalidArgumentError("negative all-reduce size");
  if (n == 0) return absl::OkStatus();
  STRATA_RETURN_IF_ERROR(NCCL_STATUS(ncclAllReduce(data, data, n, ncclFloat32, ncclSum, comm_, stream_)));
  return CheckAsync();
}

absl::Status NcclCommunicator::AllGather(const float* in, int64_t n, float* out) {
  if (n < 0) return absl::InvalidArgumentError("negative all-gather size");
  if (n == 0) return absl::OkStatus();
  STRATA_RETURN_IF_ERROR(NCCL_STATUS(ncclAllGather(in, out, n, ncclFloat32, comm_, stream_)));
  return CheckAsync();
}

absl::Status NcclCommunicator::Synchronize() {
  // Poll rather than block, so an aborted peer surfaces as an error.
  while (true) {
    cudaError_t e = cudaStreamQuery(stream_);
    if (e == cudaSuccess) break;
    if (e != cudaErrorNotReady) {
      return absl::InternalError(absl::StrCat("CUDA stream failed: ", cudaGetErrorString(e)));
    }
    STRATA_RETURN_IF_ERROR(CheckAsync());
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return CheckAsync();
}

}  // namespace strata::worker
