// Exp16 against ExpScalar (bit for bit) and both against std::exp (2 ulp)
// over a sweep of the float line, the edges of the range and specials.
#include "kernels/cpu/vec_exp.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/isa.h"

namespace strata::kernels::cpu {
namespace {

std::vector<float> Inputs() {
  std::vector<float> x = {0.0f, -0.0f, 1.0f, -1.0f, -87.0f, -87.00001f, 88.0f, 88.00001f, -88.5f, 88.7f,
                          -100.0f, 100.0f, 1e-30f, -1e-30f, 0.34657359f, -0.34657359f,
                          std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()};
  for (float v = -90.0f; v <= 90.0f; v += 0.001953125f) x.push_back(v);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-87.0f, 88.0f);
  for (int i = 0; i < 100000; ++i) x.push_back(u(rng));
  while (x.size() % 16) x.push_back(0.5f);
  return x;
}

int64_t UlpDistance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if (ia < 0) ia = std::numeric_limits<int32_t>::min() - ia;
  if (ib < 0) ib = std::numeric_limits<int32_t>::min() - ib;
  return std::llabs(static_cast<int64_t>(ia) - ib);
}

TEST(VecExpTest, ScalarIsWithinTwoUlpOfExpInRange) {
  for (float x : Inputs()) {
    const float got = ExpScalar(x);
    if (std::isnan(x) || x < -87.0f) {
      EXPECT_EQ(got, 0.0f) << x;
    } else if (x > 88.0f) {
      EXPECT_EQ(got, std::numeric_limits<float>::infinity()) << x;
    } else {
      ASSERT_LE(UlpDistance(got, std::exp(x)), 2) << "x " << x << " got " << got << " want " << std::exp(x);
    }
  }
}

TEST(VecExpTest, VectorMatchesScalarBitForBit) {
  if (!IsaSupported(Isa::kAvx512)) GTEST_SKIP() << "no AVX-512F on this CPU";
  const std::vector<float> x = Inputs();
  std::vector<float> got(x.size());
  for (size_t i = 0; i < x.size(); i += 16) {
    [&]() __attribute__((target("avx512f"))) {
      _mm512_storeu_ps(got.data() + i, Exp16(_mm512_loadu_ps(x.data() + i)));
    }();
  }
  for (size_t i = 0; i < x.size(); ++i) {
    const float want = ExpScalar(x[i]);
    ASSERT_EQ(std::memcmp(&got[i], &want, 4), 0) << "x " << x[i] << " vector " << got[i] << " scalar " << want;
  }
}

}  // namespace
}  // namespace strata::kernels::cpu
