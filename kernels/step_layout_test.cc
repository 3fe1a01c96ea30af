#include "kernels/step_layout.h"

#include "gtest/gtest.h"

namespace strata::kernels {
namespace {

KvCacheShape Cache() {
  KvCacheShape c;
  c.num_layers = 2;
  c.num_blocks = 4;
  c.block_size = 16;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  return c;
}

TEST(StepLayoutTest, RowsAndFirstRows) {
  StepLayout l;
  l.sequences = {{5, 0, 0, {0}}, {1, 20, 0, {1, 2}}, {3, 1, 0, {3}}};
  EXPECT_EQ(l.NumRows(), 9);
  EXPECT_EQ(l.FirstRows(), (std::vector<int64_t>{0, 5, 6}));
  EXPECT_TRUE(ValidateStepLayout(l, Cache(), 1000).ok());
}

TEST(StepLayoutTest, RejectsBadLayouts) {
  struct Case {
    SequenceChunk s;
    const char* message;
  };
  const Case cases[] = {
      {{0, 0, 0, {0}}, "num_tokens"},
      {{1, -1, 0, {0}}, "cached_tokens"},
      {{17, 0, 0, {0}}, "block_table has 1 blocks"},
      {{1, 0, 0, {4}}, "outside [0, 4)"},
      {{1, 0, 0, {-1}}, "outside"},
      {{1, 0, 1000, {0}}, "beyond the model's context"},
      {{1, 0, -5, {0}}, "position_offset"},
  };
  for (const Case& c : cases) {
    StepLayout l;
    l.sequences = {c.s};
    absl::Status s = ValidateStepLayout(l, Cache(), 1000);
    ASSERT_FALSE(s.ok()) << c.message;
    EXPECT_NE(s.message().find(c.message), absl::string_view::npos) << s.message();
  }
  EXPECT_FALSE(ValidateStepLayout(StepLayout{}, Cache(), 1000).ok());
}

}  // namespace
}  // namespace strata::kernels
