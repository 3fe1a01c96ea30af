// The elementwise ops: AVX-512 path against the portable one (bit for
// bit) and both against the reference (each element within atol + rtol *
// |ref|), over sizes that leave every tail length, outputs poisoned first.
#include "kernels/cpu/elementwise.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/isa.h"
#include "kernels/reference/ops.h"

namespace strata::kernels::cpu {
namespace {

constexpr float kPoison = 1234567.0f;

TEST(ElementwiseTest, SwiGluMatchesReferenceAndTwin) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (int64_t n : {1, 7, 15, 16, 17, 33, 1000, 8192}) {
    std::vector<float> g(n), u(n);
    for (int64_t i = 0; i < n; ++i) {
      g[i] = normal(rng);
      u[i] = normal(rng);
    }
    if (n > 8) {  // the ends of the sigmoid
      g[0] = 95.0f;
      g[1] = -95.0f;
      g[2] = 0.0f;
      g[3] = -0.0f;
    }
    std::vector<float> want(n), portable(n + 1, kPoison);
    reference::SwiGlu(g.data(), u.data(), n, want.data());
    SwiGlu(false, g.data(), u.data(), n, portable.data());
    ASSERT_EQ(portable[n], kPoison) << n;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_LE(std::fabs(portable[i] - want[i]), 1e-30f + 1e-6f * std::fabs(want[i]))
          << "n " << n << " at " << i << " g " << g[i] << " got " << portable[i] << " want " << want[i];
    }
    if (!IsaSupported(Isa::kAvx512)) continue;
    std::vector<float> vec(n + 1, kPoison);
    SwiGlu(true, g.data(), u.data(), n, vec.data());
    ASSERT_EQ(vec[n], kPoison) << n;
    ASSERT_EQ(std::memcmp(vec.data(), portable.data(), n * 4), 0) << n;
  }
  if (!IsaSupported(Isa::kAvx512)) GTEST_SKIP() << "AVX-512 path not run: no AVX-512F on this CPU";
}

}  // namespace
}  // namespace strata::kernels::cpu
