// Helpers for the GPU tests: device arrays with poisoned guard regions, and
// the skip-without-GPU fixture.
#ifndef STRATA_KERNELS_CUDA_TEST_UTIL_H_
#define STRATA_KERNELS_CUDA_TEST_UTIL_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_check.h"

namespace strata::kernels::cuda::testing {

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status gpu = CudaDeviceAvailable();
    if (!gpu.ok()) GTEST_SKIP() << "skipping GPU test: " << gpu.message();
  }
};

// A device array of n T with kGuard poisoned elements on each side.
template <typename T>
class DeviceArray {
 public:
  static constexpr int64_t kGuard = 256;
  explicit DeviceArray(int64_t n, T poison = T()) : n_(n), poison_(poison) {
    EXPECT_EQ(cudaMalloc(&base_, (n + 2 * kGuard) * sizeof(T)), cudaSuccess);
    std::vector<T> fill(n + 2 * kGuard, poison);
    EXPECT_EQ(cudaMemcpy(base_, fill.data(), fill.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  explicit DeviceArray(const std::vector<T>& host, T poison = T()) : DeviceArray(host.size(), poison) {
    EXPECT_EQ(cudaMemcpy(get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceArray() { cudaFree(base_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() { return base_ + kGuard; }
  int64_t size() const { return n_; }
  std::vector<T> ToHost() const {
    std::vector<T> out(n_);
    EXPECT_EQ(cudaMemcpy(out.data(), base_ + kGuard, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  // True when both guard regions still hold the poison bytes.
  bool GuardsIntact() const {
    std::vector<T> all(n_ + 2 * kGuard);
    EXPECT_EQ(cudaMemcpy(all.data(), base_, all.size() * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    for (int64_t i = 0; i < kGuard; ++i) {
      if (std::memcmp(&all[i], &poison_, sizeof(T)) != 0) return false;
      if (std::memcmp(&all[kGuard + n_ + i], &poison_, sizeof(T)) != 0) return false;
    }
    return true;
  }

 private:
  T* base_ = nullptr;
  int64_t n_;
  T poison_;
};

constexpr float kPoison = 1234567.0f;

}  // namespace strata::kernels::cuda::testing

#endif  // STRATA_KERNELS_CUDA_TEST_UTIL_H_
