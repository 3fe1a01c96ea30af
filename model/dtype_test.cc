#include "model/dtype.h"

#include <cmath>

#include "gtest/gtest.h"

namespace strata::model {
namespace {

TEST(DTypeTest, ParsesKnownNamesAndRejectsOthersClearly) {
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("F16"), DType::kF16);
  EXPECT_EQ(*ParseDType("F32"), DType::kF32);
  auto f64 = ParseDType("F64");
  ASSERT_FALSE(f64.ok());
  EXPECT_NE(f64.status().message().find("not supported"), absl::string_view::npos);
  auto junk = ParseDType("Q4_K");
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.status().message().find("unknown dtype"), absl::string_view::npos);
}

TEST(DTypeTest, BF16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3f80);
  EXPECT_EQ(BF16ToFloat(0x3f80), 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(FloatToBF16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 ties to 1 + 2^-6 (even mantissa 2).
  EXPECT_EQ(FloatToBF16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(NAN))));
}

TEST(DTypeTest, F16RoundTripsRepresentableValues) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f, 0.333251953125f}) {
    EXPECT_EQ(F16ToFloat(FloatToF16(v)), v) << v;
  }
  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_TRUE(std::isinf(F16ToFloat(FloatToF16(1e6f))));
}

TEST(DTypeTest, ConvertsBuffers) {
  uint16_t src[3] = {FloatToBF16(1.5f), FloatToBF16(-3.0f), FloatToBF16(0.25f)};
  float dst[3];
  ConvertToFloat(DType::kBF16, src, 3, dst);
  EXPECT_EQ(dst[0], 1.5f);
  EXPECT_EQ(dst[1], -3.0f);
  EXPECT_EQ(dst[2], 0.25f);
}

}  // namespace
}  // namespace strata::model
