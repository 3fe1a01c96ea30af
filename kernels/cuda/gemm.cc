#include "kernels/cuda/gemm.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "base/status_macros.h"

namespace strata::kernels::cuda {

absl::Status CublasStatus(cublasStatus_t st, const char* expr, const char* file, int line) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", expr, " failed: ",
                                          cublasLtGetStatusName(st), ": ",
                                          cublasLtGetStatusString(st)));
}

absl::StatusOr<std::unique_ptr<LtGemm>> LtGemm::Create(size_t workspace_bytes) {
  std::unique_ptr<LtGemm> g(new LtGemm());
  STRATA_RETURN_IF_ERROR(CUBLAS_STATUS(cublasLtCreate(&g->handle_)));
  if (workspace_bytes > 0) {
    STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaMalloc(&g->workspace_, workspace_bytes)));
  }
  g->workspace_bytes_ = workspace_bytes;
  return g;
}

LtGemm::~LtGemm() {
  for (auto& [key, p] : plans_) {
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  }
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

absl::StatusOr<const LtGemm::Plan*> LtGemm::GetPlan(int64_t rows, int64_t n, int64_t k) {
  const auto key = std::make_tuple(rows, n, k);
  auto it = plans_.find(key);
  if (it != plans_.end()) return &it->second;
  Plan p;
  // Column-major view: y^T [n, rows] = W [n, k] (stored as k x n, transposed)
  // times x^T [k, rows] (stored as k x rows).
  STRATA_RETURN_IF_ERROR(CUBLAS_STATUS(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F)));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  STRATA_RETURN_IF_ERROR(CUBLAS_STATUS(cublasLtMatmulDescSetAttribute(
      p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a))));
  STRATA_RETURN_IF_ERROR(CUBLAS_STATUS(cublasLtMatmulDescSetAttribute(
      p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b))));
  STRATA_RETURN_IF_ERROR(CUBLAS_STATUS(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, k, n, k)));
  STRATA_RETURN_IF_ERROR(CUBLAS_STATUS(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, k, rows, k)));
  STRATA_RETURN_IF_ERROR(CUBLAS_STATUS(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, n, rows, n)));
  cublasLtMatmulPreference_t pref;
  STRATA_RETURN_IF_ERROR(CUBLAS_STATUS(cublasLtMatmulPreferenceCreate(&pref)));
  const uint64_t ws = workspace_bytes_;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result = {};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS && found == 0) st = CUBLAS_STATUS_NOT_SUPPORTED;
  if (st != CUBLAS_STATUS_SUCCESS) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
    return absl::InternalError(absl::StrCat("cuBLASLt has no bf16 algorithm for rows ", rows, ", n ",
                                            n, ", k ", k, ": ", cublasLtGetStatusString(st)));
  }
  p.algo = result.algo;
  return &plans_.emplace(key, p).first->second;
}

absl::Status LtGemm::MatMul(const __nv_bfloat16* x, int64_t rows, const __nv_bfloat16* w, int64_t n,
                            int64_t k, float* y, cudaStream_t stream) {
  if (rows < 0 || n <= 0 || k <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad GEMM shape rows ", rows, " n ", n, " k ", k));
  }
  if (rows == 0) return absl::OkStatus();
  STRATA_ASSIGN_OR_RETURN(const Plan* p, GetPlan(rows, n, k));
  const float alpha = 1.0f, beta = 0.0f;
  return CUBLAS_STATUS(cublasLtMatmul(handle_, p->desc, &alpha, w, p->a, x, p->b, &beta, y, p->c, y,
                                      p->c, &p->algo, workspace_, workspace_bytes_, stream));
}

}  // namespace strata::kernels::cuda
