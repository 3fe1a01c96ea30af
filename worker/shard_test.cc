// Tensor-parallel slicing: every rank's slice concatenated in rank order is
// the whole tensor, for each role and several TP sizes; sizes that do not
// divide are refused with a message naming the dimension.
#include "worker/shard.h"

#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace strata::worker {
namespace {

std::vector<float> Take(const std::vector<float>& t, int64_t cols, const kernels::WeightSlice& s, int64_t rows) {
  const int64_t r1 = s.row_end < 0 ? rows : s.row_end, c1 = s.col_end < 0 ? cols : s.col_end;
  std::vector<float> out;
  for (int64_t r = s.row_begin; r < r1; ++r) {
    for (int64_t c = s.col_begin; c < c1; ++c) out.push_back(t[r * cols + c]);
  }
  return out;
}

TEST(ShardTest, SlicesConcatenateToTheWholeTensor) {
  const int64_t rows = 24, cols = 40;
  std::vector<float> t(rows * cols);
  std::iota(t.begin(), t.end(), 0.0f);
  for (int tp : {1, 2, 4, 8}) {
    // Column-parallel and vocab-parallel: stacking the row blocks.
    for (TensorRole role : {TensorRole::kColumnParallel, TensorRole::kVocabParallel}) {
      std::vector<float> cat;
      for (int r = 0; r < tp; ++r) {
        auto part = Take(t, cols, SliceFor(role, rows, cols, r, tp), rows);
        EXPECT_EQ(static_cast<int64_t>(part.size()), rows * cols / tp);
        cat.insert(cat.end(), part.begin(), part.end());
      }
      EXPECT_EQ(cat, t) << "tp " << tp;
    }
    // Row-parallel: joining the column blocks side by side.
    std::vector<std::vector<float>> parts;
    for (int r = 0; r < tp; ++r) parts.push_back(Take(t, cols, SliceFor(TensorRole::kRowParallel, rows, cols, r, tp), rows));
    std::vector<float> joined;
    const int64_t w = cols / tp;
    for (int64_t row = 0; row < rows; ++row) {
      for (int r = 0; r < tp; ++r) joined.insert(joined.end(), parts[r].begin() + row * w, parts[r].begin() + (row + 1) * w);
    }
    EXPECT_EQ(joined, t) << "tp " << tp;
    // Norms are whole on every rank.
    for (int r = 0; r < tp; ++r) EXPECT_EQ(Take(t, cols, SliceFor(TensorRole::kNorm, rows, cols, r, tp), rows), t);
  }
}

TEST(ShardTest, DimsPerRank) {
  auto c = *model::LlamaPreset("405b");
  ASSERT_TRUE(ValidateTp(c, 7, 8).ok());
  TpDims d = DimsForRank(c, 7, 8);
  EXPECT_EQ(d.num_heads, 16);
  EXPECT_EQ(d.num_kv_heads, 1);
  EXPECT_EQ(d.intermediate, 53248 / 8);
  EXPECT_EQ(d.vocab, 16032);
  EXPECT_EQ(d.vocab_begin, 7 * 16032);
}

TEST(ShardTest, RefusesSizesThatDoNotDivide) {
  auto c = *model::LlamaPreset("405b");
  auto s = ValidateTp(c, 0, 16);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("KV heads"), std::string::npos) << s;
  EXPECT_FALSE(ValidateTp(c, 0, 3).ok());
  EXPECT_FALSE(ValidateTp(c, 0, 0).ok());
  EXPECT_FALSE(ValidateTp(c, 2, 2).ok());
  EXPECT_FALSE(ValidateTp(c, -1, 2).ok());
  c.vocab_size = 1001;
  c.num_kv_heads = 2;
  c.num_heads = 2;
  c.intermediate_size = 2;
  s = ValidateTp(c, 0, 2);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("vocabulary"), std::string::npos) << s;
}

}  // namespace
}  // namespace strata::worker
