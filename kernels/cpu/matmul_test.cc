// Every ISA kernel present on this CPU against its portable twin (bit for
// bit) and against the reference product (within rounding), over odd
// shapes; outputs poisoned first. Also: blocking and row count never change
// an output.
#include "kernels/cpu/matmul.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/reference/ops.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

constexpr float kPoison = 1234567.0f;

struct Data {
  std::vector<float> x, w_f32, w_rounded, packed_f32;
  std::vector<uint16_t> xb, w_bf16, packed_bf16;
};

Data Make(int64_t rows, int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Data d;
  d.x.resize(rows * k);
  for (float& v : d.x) v = normal(rng);
  d.xb.resize(d.x.size());
  ToBf16(d.x.data(), d.x.size(), d.xb.data());
  d.w_f32.resize(n * k);
  d.w_bf16.resize(n * k);
  d.w_rounded.resize(n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    d.w_f32[i] = normal(rng) / std::sqrt(static_cast<float>(k));
    d.w_bf16[i] = model::FloatToBF16(d.w_f32[i]);
    d.w_rounded[i] = model::BF16ToFloat(d.w_bf16[i]);
  }
  d.packed_f32.resize(PackedSize(n, k));
  d.packed_bf16.resize(PackedSize(n, k));
  PackWeights(d.w_f32.data(), n, k, d.packed_f32.data());
  PackWeights(d.w_bf16.data(), n, k, d.packed_bf16.data());
  return d;
}

std::vector<Isa> Present() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    if (IsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

TEST(CpuMatMulTest, KernelsEqualTheirTwinsAndTheReference) {
  const int64_t shapes[][3] = {{1, 1, 1},   {1, 7, 33},    {3, 5, 16},   {4, 4, 64},  {5, 9, 100},
                               {2, 130, 31}, {7, 64, 2048}, {16, 33, 257}, {1, 300, 8}, {9, 17, 48},
                               // several 512-column ranges, with a ragged tail
                               {9, 17, 1100},  {16, 12, 1537}, {3, 8, 2048}};
  for (Isa isa : Present()) {
    for (const auto& s : shapes) {
      const int64_t rows = s[0], n = s[1], k = s[2];
      SCOPED_TRACE(::testing::Message() << IsaName(isa) << " rows " << rows << " n " << n << " k " << k);
      Data d = Make(rows, n, k, static_cast<uint32_t>(rows * 131 + n * 7 + k));
      for (bool bf16 : {true, false}) {
        MatMulArgs a;
        a.x = d.x.data();
        a.xb = d.xb.data();
        a.rows = rows;
        a.k = k;
        a.n = n;
        if (bf16) {
          a.w_bf16 = d.packed_bf16.data();
        } else {
          a.w_f32 = d.packed_f32.data();
        }
        std::vector<float> got(rows * n, kPoison), twin(rows * n, kPoison);
        a.y = got.data();
        MatMulRange(isa, a, 0, n);
        a.y = twin.data();
        MatMulRangeTwin(isa, a, 0, n);
        for (int64_t i = 0; i < rows * n; ++i) {
          ASSERT_EQ(got[i], twin[i]) << "bf16 weights " << bf16 << " at " << i;
        }
        // Reference: f32 math on the same (rounded) weights; bf16
        // activations add up to 2^-8 relative per product.
        std::vector<float> want(rows * n);
        const std::vector<float>& w = bf16 ? d.w_rounded : d.w_f32;
        reference::MatMul(d.x.data(), rows, w.data(), k, n, 0, n, want.data());
        const bool bf16_acts = EffectiveIsa(isa, bf16) == Isa::kAvx512Bf16;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < n; ++j) {
            double mag = 0;
            for (int64_t i = 0; i < k; ++i) mag += std::fabs(d.x[r * k + i] * w[j * k + i]);
            const double tol = (bf16_acts ? 8e-3 : 1e-5) * mag + 1e-6;
            ASSERT_LE(std::fabs(got[r * n + j] - want[r * n + j]), tol) << r << "," << j;
          }
        }
      }
    }
  }
}

TEST(CpuMatMulTest, RowsAndRangesDoNotChangeAnOutput) {
  const int64_t rows = 11, n = 23;
  for (int64_t k : {200, 1100})
  for (Isa isa : Present()) {
    Data d = Make(rows, n, k, 5);
    MatMulArgs a;
    a.x = d.x.data();
    a.xb = d.xb.data();
    a.rows = rows;
    a.k = k;
    a.n = n;
    a.w_bf16 = d.packed_bf16.data();
    std::vector<float> all(rows * n, kPoison);
    a.y = all.data();
    MatMulRange(isa, a, 0, n);
    // Each row alone, outputs in ragged ranges.
    for (int64_t r = 0; r < rows; ++r) {
      MatMulArgs one = a;
      one.x = d.x.data() + r * k;
      one.xb = d.xb.data() + r * k;
      one.rows = 1;
      std::vector<float> y(n, kPoison);
      one.y = y.data();
      for (int64_t b = 0; b < n;) {
        const int64_t e = std::min<int64_t>(n, b + kPackRows * (1 + (b % 3)));
        MatMulRange(isa, one, b, e);
        b = e;
      }
      for (int64_t j = 0; j < n; ++j) ASSERT_EQ(y[j], all[r * n + j]) << IsaName(isa) << " row " << r;
    }
  }
}

TEST(CpuMatMulTest, PackingKeepsEveryElement) {
  const int64_t n = 7, k = 45;
  std::vector<float> w(n * k);
  for (int64_t i = 0; i < n * k; ++i) w[i] = static_cast<float>(i + 1);
  std::vector<float> packed(PackedSize(n, k), -1.0f);
  PackWeights(w.data(), n, k, packed.data());
  EXPECT_EQ(PackedSize(n, k), 8 * 64);
  double sum = 0;
  for (float v : packed) sum += v;
  EXPECT_EQ(sum, (n * k) * (n * k + 1) / 2.0) << "padding must be zero, every element present once";
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) ASSERT_EQ(packed[PackedIndex(r, c, k)], w[r * k + c]);
}

TEST(CpuMatMulTest, ParsesIsaNames) {
  EXPECT_TRUE(ParseIsa("auto").ok());
  EXPECT_EQ(*ParseIsa("portable"), Isa::kPortable);
  EXPECT_FALSE(ParseIsa("sse9").ok());
}

}  // namespace
}  // namespace strata::kernels::cpu
