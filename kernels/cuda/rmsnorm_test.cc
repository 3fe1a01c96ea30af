// RMSNorm on the GPU against the reference op, over a sweep of shapes, with
// poisoned outputs and guard regions. Skips (with the driver's reason) on
// machines without a GPU.
#include "kernels/cuda/rmsnorm.h"

#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/test_util.h"
#include "kernels/reference/ops.h"
#include "model/dtype.h"

namespace strata::kernels::cuda {
namespace {

constexpr int64_t kGuard = 64;
constexpr float kPoison = 1234567.0f;

class RmsNormCudaTest : public testing::GpuTest {};

TEST_F(RmsNormCudaTest, MatchesReferenceWithAndWithoutResidual) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int64_t shapes[][2] = {{1, 64}, {3, 127}, {7, 2048}, {16, 4096}, {5, 16384}, {2, 33}};
  for (const auto& shape : shapes) {
    const int64_t rows = shape[0], dim = shape[1], n = rows * dim;
    std::vector<float> x(n), res(n), w(dim);
    std::vector<uint16_t> w_bf16(dim);
    for (float& v : x) v = normal(rng);
    for (float& v : res) v = normal(rng);
    for (int64_t i = 0; i < dim; ++i) {
      w_bf16[i] = model::FloatToBF16(1.0f + 0.1f * normal(rng));
      w[i] = model::BF16ToFloat(w_bf16[i]);
    }
    for (bool with_residual : {false, true}) {
      std::vector<float> h = x;
      if (with_residual) {
        for (int64_t i = 0; i < n; ++i) h[i] += res[i];
      }
      std::vector<float> want(n);
      reference::RmsNorm(h.data(), w.data(), 1e-5f, rows, dim, want.data());

      float *dx, *dres, *dres_out, *dout;
      __nv_bfloat16* dw;
      ASSERT_TRUE(CUDA_STATUS(cudaMalloc(&dx, n * 4)).ok());
      ASSERT_TRUE(CUDA_STATUS(cudaMalloc(&dres, n * 4)).ok());
      ASSERT_TRUE(CUDA_STATUS(cudaMalloc(&dres_out, n * 4)).ok());
      ASSERT_TRUE(CUDA_STATUS(cudaMalloc(&dout, (n + 2 * kGuard) * 4)).ok());
      ASSERT_TRUE(CUDA_STATUS(cudaMalloc(&dw, dim * 2)).ok());
      std::vector<float> poisoned(n + 2 * kGuard, kPoison);
      cudaMemcpy(dx, x.data(), n * 4, cudaMemcpyHostToDevice);
      cudaMemcpy(dres, res.data(), n * 4, cudaMemcpyHostToDevice);
      cudaMemcpy(dw, w_bf16.data(), dim * 2, cudaMemcpyHostToDevice);
      cudaMemcpy(dout, poisoned.data(), poisoned.size() * 4, cudaMemcpyHostToDevice);
      ASSERT_TRUE(CUDA_STATUS(LaunchRmsNorm<float>(dx, with_residual ? dres : nullptr,
                                                   with_residual ? dres_out : nullptr, dw, 1e-5f,
                                                   rows, dim, dout + kGuard, nullptr))
                      .ok());
      std::vector<float> got(n + 2 * kGuard), got_res(n);
      ASSERT_TRUE(CUDA_STATUS(cudaMemcpy(got.data(), dout, got.size() * 4, cudaMemcpyDeviceToHost)).ok());
      cudaMemcpy(got_res.data(), dres_out, n * 4, cudaMemcpyDeviceToHost);
      for (int64_t i = 0; i < kGuard; ++i) {
        ASSERT_EQ(got[i], kPoison) << "write before the output";
        ASSERT_EQ(got[kGuard + n + i], kPoison) << "write past the output";
      }
      for (int64_t i = 0; i < n; ++i) {
        const float ref = want[i], val = got[kGuard + i];
        ASSERT_LE(std::fabs(val - ref), 1e-5f + 1e-5f * std::fabs(ref))
            << "rows " << rows << " dim " << dim << " residual " << with_residual << " at " << i;
        if (with_residual) {
          ASSERT_EQ(got_res[i], h[i]);
        }
      }
      cudaFree(dx);
      cudaFree(dres);
      cudaFree(dres_out);
      cudaFree(dout);
      cudaFree(dw);
    }
  }
}

TEST_F(RmsNormCudaTest, RejectsBadShapes) {
  EXPECT_EQ(LaunchRmsNorm<float>(nullptr, nullptr, nullptr, nullptr, 1e-5f, -1, 8, nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(LaunchRmsNorm<float>(nullptr, nullptr, nullptr, nullptr, 1e-5f, 0, 8, nullptr, nullptr),
            cudaSuccess);
}

}  // namespace
}  // namespace strata::kernels::cuda
