// Turns CUDA runtime errors into absl::Status with the file and line of the
// failing call (after llm.c's cudaCheck). Launchers return cudaError_t; host
// code wraps each call: STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaMalloc(...))).
#ifndef STRATA_KERNELS_CUDA_CUDA_CHECK_H_
#define STRATA_KERNELS_CUDA_CUDA_CHECK_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace strata::kernels::cuda {

inline absl::Status CudaStatus(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", expr, " failed: ",
                                          cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
}

// OK with the device count when a usable GPU exists; otherwise UNAVAILABLE
// with the driver's reason (on machines without a GPU: "CUDA driver version
// is insufficient for CUDA runtime version" or "no CUDA-capable device").
absl::Status CudaDeviceAvailable();

}  // namespace strata::kernels::cuda

#define CUDA_STATUS(expr) ::strata::kernels::cuda::CudaStatus((expr), #expr, __FILE__, __LINE__)

#endif  // STRATA_KERNELS_CUDA_CUDA_CHECK_H_
