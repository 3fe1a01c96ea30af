#include "model/rope.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "model/config.h"

namespace strata::model {
namespace {

LlamaConfig Llama31() {
  LlamaConfig c = *LlamaPreset("8b");
  return c;
}

// Golden values from Hugging Face's _compute_llama3_parameters, run in
// PyTorch (float32) for theta 500000, head_dim 128, factor 8, low 1, high 4,
// original context 8192.
TEST(RopeTest, Llama3InverseFrequenciesMatchHuggingFace) {
  const std::vector<float> inv = RopeInverseFrequencies(Llama31());
  ASSERT_EQ(inv.size(), 64u);
  const int idx[] = {0, 20, 40, 44, 45, 46, 47, 48, 52, 63};
  const float want[] = {1.000000000e+00f, 1.656044088e-02f, 3.428102355e-05f, 1.509621779e-05f,
                        1.229763893e-05f, 1.001786859e-05f, 8.160727702e-06f, 6.647869668e-06f,
                        2.927499736e-06f, 3.068925878e-07f};
  for (int k = 0; k < 10; ++k) {
    EXPECT_NEAR(inv[idx[k]], want[k], 2e-6 * want[k]) << "index " << idx[k];
  }
}

TEST(RopeTest, ScalingLeavesHighFrequenciesAndDividesLowOnes) {
  LlamaConfig plain = Llama31();
  plain.rope_scaling.reset();
  const std::vector<float> base = RopeInverseFrequencies(plain);
  const std::vector<float> scaled = RopeInverseFrequencies(Llama31());
  const double pi = 3.141592653589793;
  for (size_t i = 0; i < base.size(); ++i) {
    const double wavelen = 2 * pi / base[i];
    EXPECT_NEAR(base[i], std::pow(500000.0, -2.0 * i / 128.0), 1e-6 * base[i]);
    if (wavelen < 8192.0 / 4) {
      EXPECT_EQ(scaled[i], base[i]) << i;
    }
    if (wavelen > 8192.0) {
      EXPECT_FLOAT_EQ(scaled[i], base[i] / 8) << i;
    }
    // Medium band interpolates between the two.
    EXPECT_LE(scaled[i], base[i]);
    EXPECT_GE(scaled[i], base[i] / 8 * (1 - 1e-6));
  }
}

// Positions above the original 8192 and near the 128K context limit.
TEST(RopeTest, CosSinAtLongPositionsMatchPyTorch) {
  const std::vector<float> inv = RopeInverseFrequencies(Llama31());
  std::vector<float> c(64), s(64);
  RopeCosSin(inv, 9000, c.data(), s.data());
  EXPECT_NEAR(c[0], -0.788178563117981, 1e-5);
  EXPECT_NEAR(c[45], 0.993881344795227, 1e-5);
  EXPECT_NEAR(c[63], 0.9999961853027344, 1e-5);
  EXPECT_NEAR(s[0], 0.6154466867446899, 1e-5);
  EXPECT_NEAR(s[45], 0.11045292019844055, 1e-5);
  EXPECT_NEAR(s[63], 0.002762029878795147, 1e-5);
  RopeCosSin(inv, 131071, c.data(), s.data());
  EXPECT_NEAR(c[0], -0.8179835081100464, 1e-5);
  EXPECT_NEAR(c[45], -0.04105598106980324, 1e-5);
  EXPECT_NEAR(c[63], 0.9991911053657532, 1e-5);
  EXPECT_NEAR(s[0], -0.5752416849136353, 1e-5);
  EXPECT_NEAR(s[45], 0.9991568326950073, 1e-5);
  EXPECT_NEAR(s[63], 0.040213871747255325, 1e-5);
}

TEST(RopeTest, RotationPairsElementWithItsHalfAndKeepsNorm) {
  const int64_t d = 8;
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> cos = {0, 1, 0.6f, 1}, sin = {1, 0, 0.8f, 0};
  ApplyRotaryToHead(x.data(), d, cos.data(), sin.data());
  // Pair (1, 5) rotated by 90 degrees: (-5, 1). Pair (2, 6) unchanged.
  EXPECT_FLOAT_EQ(x[0], -5);
  EXPECT_FLOAT_EQ(x[4], 1);
  EXPECT_FLOAT_EQ(x[1], 2);
  EXPECT_FLOAT_EQ(x[5], 6);
  EXPECT_NEAR(x[2] * x[2] + x[6] * x[6], 3 * 3 + 7 * 7, 1e-4);
}

}  // namespace
}  // namespace strata::model
