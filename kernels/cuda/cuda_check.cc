#include "kernels/cuda/cuda_check.h"

namespace strata::kernels::cuda {

absl::Status CudaDeviceAvailable() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("no usable CUDA device: ", cudaGetErrorString(err)));
  }
  if (count == 0) return absl::UnavailableError("no CUDA device found");
  return absl::OkStatus();
}

}  // namespace strata::kernels::cuda
