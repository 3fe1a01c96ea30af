// The AMX products (amx_matmul.h): the tile kernel against its portable
// twin (bit for bit) and against the plain reference product (each element
// within atol + rtol * sum |x * w|), on seeded random inputs over a sweep
// of shapes: 1, 2, 3, 15, 16, 17, 64 and 129 rows, k not a multiple of 32,
// ragged n. Outputs are poisoned first and a guard region after them is
// checked. Also: output ranges and batch mates never change an output, and
// the packed layouts keep every element. Tests that run tiles skip, saying
// why, where AMX cannot run (the twin and the layouts are tested anyway).
#include "kernels/cpu/amx_matmul.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/amx_test_util.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/matmul.h"
#include "kernels/reference/ops.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

constexpr float kPoison = 1234567.0f;
constexpr int64_t kGuard = 64;

struct Problem {
  int64_t rows = 0, n = 0, k = 0;
  std::vector<float> x, w;           // x: [rows, k]; w: [n, k], bf16 values
  std::vector<uint16_t> xb, packed;  // tile copy of x; AMX packed w
  std::vector<float> y;              // [rows, n] + guard, poisoned

  MatMulArgs Args() {
    MatMulArgs a;
    a.x = x.data();
    a.xb = xb.data();
    a.rows = rows;
    a.k = k;
    a.n = n;
    a.w_bf16 = packed.data();
    a.y = y.data();
    return a;
  }
  void Poison() { y.assign(rows * n + kGuard, kPoison); }
};

// x ~ N(0, scale^2); w ~ N(0, 1/k), both rounded to bf16 (so the reference
// sees exactly what the tiles see).
Problem Make(int64_t rows, int64_t n, int64_t k, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Problem p;
  p.rows = rows;
  p.n = n;
  p.k = k;
  p.x.resize(rows * k);
  for (float& v : p.x) v = model::BF16ToFloat(model::FloatToBF16(scale * normal(rng)));
  p.w.resize(n * k);
  std::vector<uint16_t> wb(n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    wb[i] = model::FloatToBF16(normal(rng) / std::sqrt(static_cast<float>(k)));
    p.w[i] = model::BF16ToFloat(wb[i]);
  }
  p.packed.assign(AmxPackedSize(n, k), 0xffff);
  PackWeightsAmx(wb.data(), n, k, p.packed.data());
  // The twin reads the same copy the kernel does; where ToBf16Tiles cannot
  // run (no AVX-512 BF16), the copy is made element by element.
  p.xb.assign(AmxActRows(rows) * AmxActCols(k), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < k; ++c) p.xb[AmxActIndex(r, c, k)] = model::FloatToBF16(p.x[r * k + c]);
  p.Poison();
  return p;
}

void ExpectGuard(const Problem& p, const std::string& what) {
  for (int64_t i = p.rows * p.n; i < p.rows * p.n + kGuard; ++i) ASSERT_EQ(p.y[i], kPoison) << what << " guard " << i;
}

const int64_t kRows[] = {1, 2, 3, 15, 16, 17, 64, 129};
const int64_t kShapes[][2] = {{1, 1}, {17, 33}, {64, 100}, {129, 31}, {100, 2048 + 48}, {33, 257}};

TEST(AmxMatMulTest, TwinMatchesTheReference) {
  for (int64_t rows : {1, 3, 17}) {
    for (const auto& s : kShapes) {
      Problem p = Make(rows, s[0], s[1], static_cast<uint32_t>(rows * 7 + s[0] * 3 + s[1]));
      AmxMatMulRangeTwin(p.Args(), 0, p.n);
      std::vector<float> want(rows * p.n);
      reference::MatMul(p.x.data(), rows, p.w.data(), p.k, p.n, 0, p.n, want.data());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < p.n; ++j) {
          double mag = 0;
          for (int64_t i = 0; i < p.k; ++i) mag += std::fabs(p.x[r * p.k + i] * p.w[j * p.k + i]);
          ASSERT_LE(std::fabs(p.y[r * p.n + j] - want[r * p.n + j]), 1e-6 + 1e-5 * mag)
              << "rows " << rows << " n " << p.n << " k " << p.k << " at " << r << "," << j;
        }
      }
      ExpectGuard(p, "twin");
    }
  }
}

TEST(AmxMatMulTest, KernelEqualsTwinAndReference) {
  SKIP_WITHOUT_AMX();
  for (int64_t rows : kRows) {
    for (const auto& s : kShapes) {
      const std::string what = "rows " + std::to_string(rows) + " n " + std::to_string(s[0]) + " k " +
                               std::to_string(s[1]);
      Problem p = Make(rows, s[0], s[1], static_cast<uint32_t>(rows * 131 + s[0] * 7 + s[1]));
      std::vector<uint16_t> xb(p.xb.size(), 0xffff);  // the kernel's own copy must equal the element-wise one
      ToBf16Tiles(p.x.data(), rows, p.k, xb.data());
      ASSERT_EQ(xb, p.xb) << what;
      AmxMatMulRange(p.Args(), 0, p.n);
      ExpectGuard(p, what);
      const std::vector<float> got = p.y;
      p.Poison();
      AmxMatMulRangeTwin(p.Args(), 0, p.n);
      for (int64_t i = 0; i < rows * p.n; ++i) ASSERT_EQ(got[i], p.y[i]) << what << " at " << i;
      std::vector<float> want(rows * p.n);
      reference::MatMul(p.x.data(), rows, p.w.data(), p.k, p.n, 0, p.n, want.data());
      for (int64_t i = 0; i < rows * p.n; ++i) {
        ASSERT_LE(std::fabs(got[i] - want[i]), 1e-5f + 1e-4f * std::fabs(want[i]) + 1e-5f * std::sqrt(p.k))
            << what << " at " << i;
      }
    }
  }
}

// Prompt-sized products, each plan of MakePlan (amx_matmul.cc) reached:
//  - 529 x 100 x 4100: deep k (34 row tiles): k blocks of one span (15
//    chunks, the last 9) with the sums in the scratch, a ragged group;
//  - 300 x 70 x 2048: deep k with an odd row tile beside the pairs;
//  - 272 x 96 x 512: k whole, one span, an odd row tile;
//  - 272 x 96 x 1056 and 256 x 64 x 2048: k whole in several spans (16,
//    16, 1 and four of 16), the sums in the per-thread span buffer;
//  - 1040 x 64 x 512: three super blocks (32, 32 and 1 row tiles);
//  - 240 x 70 x 2208: k blocks of 35 chunks below the span threshold (the
//    2 x 2 path with the sums in the scratch);
//  - 530 x 112 x 512: a partial last row tile in a spanned super block.
// Converted by row-tile ranges as threads do; outputs in two ranges, one
// not on a group boundary. Where n is a multiple of 16 the product runs
// again into a 64-byte aligned y, which takes the streaming stores.
TEST(AmxMatMulTest, LargeRowCountsEqualTwin) {
  SKIP_WITHOUT_AMX();
  for (auto [rows, n, k] : {std::tuple<int64_t, int64_t, int64_t>{529, 100, 4100},
                            {300, 70, 2048},
                            {272, 96, 512},
                            {272, 96, 1056},
                            {256, 64, 2048},
                            {1040, 64, 512},
                            {240, 70, 2208},
                            {530, 112, 512}}) {
    const std::string what = "rows " + std::to_string(rows) + " n " + std::to_string(n) + " k " + std::to_string(k);
    Problem p = Make(rows, n, k, static_cast<uint32_t>(rows + n + k));
    std::vector<uint16_t> xb(p.xb.size(), 0xffff);
    const int64_t tiles = AmxActRows(rows) / kAmxTileRows;
    ToBf16TileRows(p.x.data(), rows, k, 0, tiles / 3, xb.data());
    ToBf16TileRows(p.x.data(), rows, k, tiles / 3, tiles, xb.data());
    ASSERT_EQ(xb, p.xb) << what;
    AmxMatMulRange(p.Args(), 0, 48);
    AmxMatMulRange(p.Args(), 48, p.n);
    ExpectGuard(p, what);
    const std::vector<float> got = p.y;
    p.Poison();
    AmxMatMulRangeTwin(p.Args(), 0, p.n);
    for (int64_t i = 0; i < rows * p.n; ++i) ASSERT_EQ(got[i], p.y[i]) << what << " at " << i;
    // Streaming stores take whole aligned cache lines only: the same product
    // into a 64-byte aligned y (n a multiple of 16, ranges of whole lines)
    // must equal the twin as well, the guard after it untouched.
    if (n % 16 != 0) continue;
    std::vector<float> store(rows * n + kGuard + 16, kPoison);
    float* y = store.data();
    while (reinterpret_cast<uintptr_t>(y) % 64 != 0) ++y;
    MatMulArgs args = p.Args();
    args.y = y;
    AmxMatMulRange(args, 0, 48);
    AmxMatMulRange(args, 48, n);
    for (int64_t i = 0; i < rows * n; ++i) ASSERT_EQ(y[i], p.y[i]) << what << " aligned, at " << i;
    for (int64_t i = rows * n; i < rows * n + kGuard; ++i) ASSERT_EQ(y[i], kPoison) << what << " aligned guard " << i;
  }
}

TEST(AmxMatMulTest, SubnormalsFollowTheTwin) {
  SKIP_WITHOUT_AMX();
  // Products and sums near FLT_MIN (w ~ 0.1): normal, straddling it,
  // subnormal products, subnormal bf16 inputs. Flushing to zero must be as
  // the twin says.
  for (float scale : {1e-36f, 1e-37f, 1e-38f, 5e-39f}) {
    Problem p = Make(17, 33, 100, 9, scale);
    AmxMatMulRange(p.Args(), 0, p.n);
    const std::vector<float> got = p.y;
    p.Poison();
    AmxMatMulRangeTwin(p.Args(), 0, p.n);
    for (int64_t i = 0; i < p.rows * p.n; ++i) ASSERT_EQ(got[i], p.y[i]) << "scale " << scale << " at " << i;
  }
}

TEST(AmxMatMulTest, RangesAndBatchMatesDoNotChangeAnOutput) {
  SKIP_WITHOUT_AMX();
  Problem all = Make(37, 150, 300, 5);
  AmxMatMulRange(all.Args(), 0, all.n);
  for (int64_t r = 0; r < all.rows; r += 5) {
    // Row r alone (its own tile copy), outputs in ragged ranges.
    Problem one = Make(1, all.n, all.k, 5);
    one.x.assign(all.x.begin() + r * all.k, all.x.begin() + (r + 1) * all.k);
    one.xb.assign(AmxActRows(1) * AmxActCols(all.k), 0);
    ToBf16Tiles(one.x.data(), 1, all.k, one.xb.data());
    one.packed = all.packed;
    for (int64_t b = 0; b < all.n;) {
      const int64_t e = std::min<int64_t>(all.n, b + 1 + (b * 7) % 23);
      AmxMatMulRange(one.Args(), b, e);
      b = e;
    }
    for (int64_t j = 0; j < all.n; ++j) ASSERT_EQ(one.y[j], all.y[r * all.n + j]) << "row " << r << " col " << j;
  }
}

TEST(AmxMatMulTest, PackedLayoutsKeepEveryElement) {
  const int64_t n = 70, k = 45;
  std::vector<uint16_t> w(n * k);
  for (int64_t i = 0; i < n * k; ++i) w[i] = static_cast<uint16_t>(i + 1);
  std::vector<uint16_t> packed(AmxPackedSize(n, k), 0xffff);
  PackWeightsAmx(w.data(), n, k, packed.data());
  EXPECT_EQ(AmxPackedSize(n, k), (n + kAmxGroup - 1) / kAmxGroup * kAmxGroup * 64);
  std::vector<int> seen(packed.size(), 0);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      ASSERT_EQ(packed[AmxPackedIndex(r, c, k)], w[r * k + c]);
      ++seen[AmxPackedIndex(r, c, k)];
    }
  }
  for (size_t i = 0; i < packed.size(); ++i) {
    ASSERT_EQ(seen[i] == 0 ? packed[i] : 0, 0) << "padding must be zero at " << i;
    ASSERT_LE(seen[i], 1) << "two elements at " << i;
  }
  std::vector<int> act(AmxActRows(17) * AmxActCols(k), 0);
  for (int64_t r = 0; r < 17; ++r)
    for (int64_t c = 0; c < k; ++c) ASSERT_EQ(++act[AmxActIndex(r, c, k)], 1) << r << "," << c;
}

TEST(AmxMatMulTest, IsaNamesAndRefusal) {
  EXPECT_STREQ(IsaName(Isa::kAmx), "amx");
  auto isa = ParseIsa("amx");
  if (IsaSupported(Isa::kAmx)) {
    ASSERT_TRUE(isa.ok());
    EXPECT_EQ(*isa, Isa::kAmx);
    EXPECT_EQ(BestIsa(), Isa::kAmx);
  } else {
    ASSERT_FALSE(isa.ok());
    EXPECT_NE(isa.status().message().find("amx cannot run here"), std::string::npos) << isa.status();
  }
}

}  // namespace
}  // namespace strata::kernels::cpu
