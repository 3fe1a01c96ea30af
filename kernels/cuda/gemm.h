// bf16 GEMMs through cuBLASLt with f32 accumulation and f32 output:
//   y: [rows, n] = x: [rows, k] times w^T, w: [n, k] (the checkpoint layout).
// The matmul descriptor, layouts and the heuristic's algorithm are cached
// per (rows, n, k), so a steady decode loop asks the heuristic once.
#ifndef STRATA_KERNELS_CUDA_GEMM_H_
#define STRATA_KERNELS_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/statusor.h"

namespace strata::kernels::cuda {

// cuBLAS status -> absl::Status with the file and line of the call.
absl::Status CublasStatus(cublasStatus_t st, const char* expr, const char* file, int line);
#define CUBLAS_STATUS(expr) ::strata::kernels::cuda::CublasStatus((expr), #expr, __FILE__, __LINE__)

class LtGemm {
 public:
  // Creates the cuBLASLt handle and a device workspace of `workspace_bytes`.
  static absl::StatusOr<std::unique_ptr<LtGemm>> Create(size_t workspace_bytes = 32 << 20);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // x: device bf16 [rows, k]; w: device bf16 [n, k]; y: device f32 [rows, n].
  absl::Status MatMul(const __nv_bfloat16* x, int64_t rows, const __nv_bfloat16* w, int64_t n,
                      int64_t k, float* y, cudaStream_t stream);

  // Shapes planned so far (for tests and logs).
  size_t cached_plans() const { return plans_.size(); }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo;
  };
  LtGemm() = default;
  absl::StatusOr<const Plan*> GetPlan(int64_t rows, int64_t n, int64_t k);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<std::tuple<int64_t, int64_t, int64_t>, Plan> plans_;
};

}  // namespace strata::kernels::cuda

#endif  // STRATA_KERNELS_CUDA_GEMM_H_
