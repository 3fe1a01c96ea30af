// The reference ops checked against independent, dense formulations: paged
// attention against attention over a contiguous K/V matrix, chunked prefill
// against one chunk, and the backend's threaded MatMul against one thread.
#include "kernels/reference/ops.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/reference/reference_backend.h"

namespace strata::kernels {
namespace {

std::vector<float> Random(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Dense causal GQA attention for one sequence whose K/V for positions
// [0, total) are contiguous: k, v: [total, kv_heads, d]; q: [new, heads, d]
// for positions [total - new, total).
std::vector<float> DenseAttention(const std::vector<float>& q, const std::vector<float>& k,
                                  const std::vector<float>& v, int64_t total, int64_t new_tokens,
                                  int64_t heads, int64_t kv_heads, int64_t d) {
  std::vector<float> out(new_tokens * heads * d, 0.0f);
  for (int64_t t = 0; t < new_tokens; ++t) {
    const int64_t pos = total - new_tokens + t;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kvh = h * kv_heads / heads;
      std::vector<double> s(pos + 1);
      double mx = -1e30;
      for (int64_t j = 0; j <= pos; ++j) {
        double dot = 0;
        for (int64_t i = 0; i < d; ++i) dot += q[(t * heads + h) * d + i] * k[(j * kv_heads + kvh) * d + i];
        s[j] = dot / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, s[j]);
      }
      double den = 0;
      for (double& x : s) den += (x = std::exp(x - mx));
      for (int64_t j = 0; j <= pos; ++j) {
        for (int64_t i = 0; i < d; ++i) {
          out[(t * heads + h) * d + i] += static_cast<float>(s[j] / den) * v[(j * kv_heads + kvh) * d + i];
        }
      }
    }
  }
  return out;
}

struct AttnCase {
  int64_t heads, kv_heads, d, block_size, cached, new_tokens;
};

TEST(ReferenceOpsTest, PagedAttentionMatchesDenseAttention) {
  const AttnCase cases[] = {
      {4, 4, 8, 4, 0, 7},     // ratio 1, ragged last block
      {8, 2, 16, 16, 5, 1},   // ratio 4 decode
      {8, 1, 64, 8, 13, 3},   // ratio 8
      {16, 1, 128, 16, 30, 2},  // the 405B per-GPU group of 16, head_dim 128
      {6, 3, 10, 5, 0, 11},   // odd sizes
  };
  std::mt19937 rng(1);
  for (const AttnCase& c : cases) {
    const int64_t total = c.cached + c.new_tokens;
    const int64_t blocks = (total + c.block_size - 1) / c.block_size;
    KvCacheShape shape{1, blocks + 3, c.block_size, c.kv_heads, c.d};
    // Scatter the blocks: the table is a permutation, not 0..n-1.
    SequenceChunk seq{static_cast<int32_t>(c.new_tokens), static_cast<int32_t>(c.cached), 0, {}};
    for (int64_t b = 0; b < blocks; ++b) seq.block_table.push_back(static_cast<int32_t>((b * 7 + 2) % (blocks + 3)));
    std::sort(seq.block_table.begin(), seq.block_table.end());
    std::reverse(seq.block_table.begin(), seq.block_table.end());
    const int64_t w = c.kv_heads * c.d;
    std::vector<float> k = Random(total * w, rng), v = Random(total * w, rng);
    std::vector<float> q = Random(c.new_tokens * c.heads * c.d, rng);
    std::vector<float> k_cache(shape.FloatsPerLayer(), NAN), v_cache(shape.FloatsPerLayer(), NAN);
    // Fill the cache: first the cached prefix, then this step's tokens.
    StepLayout prefix;
    if (c.cached > 0) {
      prefix.sequences = {{static_cast<int32_t>(c.cached), 0, 0, seq.block_table}};
      reference::WriteKv(prefix, shape, k.data(), v.data(), k_cache.data(), v_cache.data());
    }
    StepLayout step;
    step.sequences = {seq};
    reference::WriteKv(step, shape, k.data() + c.cached * w, v.data() + c.cached * w, k_cache.data(),
                       v_cache.data());
    std::vector<float> out(q.size(), NAN);
    reference::Attention(step, shape, k_cache.data(), v_cache.data(), q.data(), c.heads, out.data());
    std::vector<float> want = DenseAttention(q, k, v, total, c.new_tokens, c.heads, c.kv_heads, c.d);
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_LE(std::fabs(out[i] - want[i]), 1e-5f + 1e-4f * std::fabs(want[i]))
          << "heads " << c.heads << "/" << c.kv_heads << " d " << c.d << " at " << i;
    }
  }
}

TEST(ReferenceOpsTest, RmsNormAndSwiGluMatchFormulas) {
  std::mt19937 rng(2);
  for (int64_t dim : {1, 7, 64, 333}) {
    std::vector<float> x = Random(3 * dim, rng), w = Random(dim, rng), out(3 * dim, NAN);
    reference::RmsNorm(x.data(), w.data(), 1e-5f, 3, dim, out.data());
    for (int64_t r = 0; r < 3; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
      const double inv = 1 / std::sqrt(ss / dim + 1e-5);
      for (int64_t i = 0; i < dim; ++i) {
        const double ref = x[r * dim + i] * inv * w[i];
        ASSERT_NEAR(out[r * dim + i], ref, 1e-5 + 1e-5 * std::fabs(ref));
      }
    }
    std::vector<float> g = Random(dim, rng), u = Random(dim, rng), s(dim, NAN);
    reference::SwiGlu(g.data(), u.data(), dim, s.data());
    for (int64_t i = 0; i < dim; ++i) {
      const double ref = g[i] / (1 + std::exp(-double(g[i]))) * u[i];
      ASSERT_NEAR(s[i], ref, 1e-6 + 1e-5 * std::fabs(ref));
    }
  }
}

TEST(ReferenceOpsTest, ThreadCountDoesNotChangeMatMulBits) {
  std::mt19937 rng(3);
  const int64_t rows = 5, in = 257, out = 131;
  std::vector<float> x = Random(rows * in, rng), w = Random(out * in, rng);
  model::TensorView t;
  t.name = "w";
  t.dtype = model::DType::kF32;
  t.shape = {out, in};
  t.data = reinterpret_cast<const uint8_t*>(w.data());
  t.num_bytes = w.size() * 4;
  std::vector<float> y1(rows * out), y3(rows * out), dense(rows * out);
  ReferenceBackend one(1), three(3);
  auto w1 = one.LoadWeight(t, {});
  auto w3 = three.LoadWeight(t, {});
  ASSERT_TRUE(w1.ok() && w3.ok());
  one.MatMul(x.data(), rows, **w1, y1.data());
  three.MatMul(x.data(), rows, **w3, y3.data());
  EXPECT_EQ(y1, y3);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < in; ++i) acc += double(x[r * in + i]) * w[o * in + i];
      ASSERT_NEAR(y1[r * out + o], acc, 1e-4 + 1e-4 * std::fabs(acc));
    }
  }
}

TEST(ReferenceOpsTest, LoadWeightSlicesRowsAndColumns) {
  std::vector<float> w(6 * 4);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i);
  model::TensorView t;
  t.name = "w";
  t.dtype = model::DType::kF32;
  t.shape = {6, 4};
  t.data = reinterpret_cast<const uint8_t*>(w.data());
  t.num_bytes = w.size() * 4;
  ReferenceBackend b;
  auto slice = b.LoadWeight(t, WeightSlice{2, 4, 1, 3});
  ASSERT_TRUE(slice.ok());
  EXPECT_EQ((*slice)->rows(), 2);
  EXPECT_EQ((*slice)->cols(), 2);
  // x = [1, 0] picks column 1 of the slice: rows 2..3, original column 1.
  std::vector<float> x = {1, 0}, y(2);
  b.MatMul(x.data(), 1, **slice, y.data());
  EXPECT_EQ(y[0], 9);   // w[2][1]
  EXPECT_EQ(y[1], 13);  // w[3][1]
  EXPECT_FALSE(b.LoadWeight(t, WeightSlice{0, 7, 0, -1}).ok());
  EXPECT_FALSE(b.LoadWeight(t, WeightSlice{3, 3, 0, -1}).ok());
}

}  // namespace
}  // namespace strata::kernels
