// Attention on AMX tiles (amx_attention.h) against its twin (bit for bit)
// and the plain reference (each element within atol + rtol * |ref|; Q and
// P are rounded to bf16 for the tiles), on seeded random inputs over a
// sweep: head_dim 64 and 128, groups 1, 3, 4, 8 and 16, decode tokens,
// prompts of 1, 2, 3, 15, 16, 17, 64 and 129 tokens, chunked prompts,
// block sizes 16, 7 and 11 (ragged last KV blocks). Outputs are poisoned
// first and a guard region after them checked. Also: a token's output is
// the same bits in a chunk of any size, alone or as a decode step. Tests
// that run tiles skip, saying why, where AMX cannot run.
#include "kernels/cpu/amx_attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/amx_test_util.h"
#include "kernels/cpu/isa.h"
#include "kernels/reference/ops.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

constexpr float kPoison = 1234567.0f;
constexpr int64_t kGuard = 64;

// One layer's cache and a step over it: sequences (cached, new).
struct Case {
  int64_t q_heads = 0, kv_heads = 0, d = 0, block_size = 0;
  std::vector<std::pair<int, int>> seqs;
  StepLayout layout;
  KvCacheShape shape;
  std::vector<float> kf, vf, q, out;  // cache as f32 (bf16 values), q and out [rows, q_heads, d]
  std::vector<uint16_t> kb, vb;
  std::vector<std::vector<int64_t>> slots;
};

Case Make(int64_t q_heads, int64_t kv_heads, int64_t d, int64_t block_size, std::vector<std::pair<int, int>> seqs,
          uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Case c;
  c.q_heads = q_heads;
  c.kv_heads = kv_heads;
  c.d = d;
  c.block_size = block_size;
  c.seqs = seqs;
  int64_t blocks = 0;
  for (auto [cached, n] : seqs) blocks += (cached + n + block_size - 1) / block_size;
  c.shape.num_layers = 1;
  c.shape.block_size = block_size;
  c.shape.num_kv_heads = kv_heads;
  c.shape.head_dim = d;
  c.shape.num_blocks = blocks + 3;
  std::vector<int32_t> ids(c.shape.num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  size_t next = 0;
  for (auto [cached, n] : seqs) {
    SequenceChunk s;
    s.cached_tokens = cached;
    s.num_tokens = n;
    std::vector<int64_t> sl;
    for (int b = 0; b < (cached + n + block_size - 1) / block_size; ++b) s.block_table.push_back(ids[next++]);
    for (int i = 0; i < cached + n; ++i) sl.push_back(s.block_table[i / block_size] * block_size + i % block_size);
    c.layout.sequences.push_back(s);
    c.slots.push_back(sl);
  }
  const int64_t values = c.shape.num_blocks * block_size * kv_heads * d;
  for (auto* v : {&c.kf, &c.vf}) {
    v->resize(values);
    for (float& x : *v) x = model::BF16ToFloat(model::FloatToBF16(normal(rng)));
  }
  for (float x : c.kf) c.kb.push_back(model::FloatToBF16(x));
  for (float x : c.vf) c.vb.push_back(model::FloatToBF16(x));
  c.q.resize(c.layout.NumRows() * q_heads * d);
  for (float& x : c.q) x = normal(rng);
  c.out.assign(c.q.size() + kGuard, kPoison);
  return c;
}

AmxAttentionArgs Args(Case& c) {
  AmxAttentionArgs a;
  a.q = c.q.data();
  a.q_heads = c.q_heads;
  a.kv_heads = c.kv_heads;
  a.d = c.d;
  a.k = c.kb.data();
  a.v = c.vb.data();
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  a.out = c.out.data();
  return a;
}

// Every (sequence, KV head) of the step, with the kernel or its twin.
void RunAll(Case& c, bool twin) {
  c.out.assign(c.q.size() + kGuard, kPoison);
  const AmxAttentionArgs a = Args(c);
  int64_t row0 = 0;
  for (size_t i = 0; i < c.layout.sequences.size(); ++i) {
    const SequenceChunk& s = c.layout.sequences[i];
    for (int64_t h = 0; h < c.kv_heads; ++h) {
      (twin ? AmxAttentionHeadTwin : AmxAttentionHead)(a, h, row0, s.num_tokens, s.cached_tokens, c.slots[i].data());
    }
    row0 += s.num_tokens;
  }
  for (int64_t i = c.q.size(); i < static_cast<int64_t>(c.out.size()); ++i) ASSERT_EQ(c.out[i], kPoison) << "guard";
}

struct Shape {
  int64_t q_heads, kv_heads, d, block_size;
  std::vector<std::pair<int, int>> seqs;
};
const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> shapes = {
      {32, 8, 64, 16, {{0, 1}, {0, 2}, {0, 3}, {0, 15}}},
      {32, 8, 64, 16, {{0, 16}, {0, 17}, {0, 64}, {0, 129}}},
      {8, 2, 128, 7, {{12, 1}, {300, 1}, {0, 33}, {40, 9}}},
      {16, 1, 128, 16, {{1000, 1}, {50, 20}}},
      {4, 4, 64, 11, {{0, 29}, {5, 1}, {100, 3}}},
      {6, 2, 64, 16, {{0, 23}, {31, 2}}},
      {16, 2, 64, 32, {{31, 1}, {0, 70}}},
  };
  return shapes;
}

TEST(AmxAttentionTest, TwinMatchesTheReference) {
  for (size_t si = 0; si < Shapes().size(); ++si) {
    const Shape& s = Shapes()[si];
    Case c = Make(s.q_heads, s.kv_heads, s.d, s.block_size, s.seqs, 10 + si);
    RunAll(c, true);
    std::vector<float> want(c.q.size());
    reference::Attention(c.layout, c.shape, c.kf.data(), c.vf.data(), c.q.data(), c.q_heads, want.data());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_LE(std::fabs(c.out[i] - want[i]), 2e-2f + 2e-2f * std::fabs(want[i]))
          << "shape " << si << " at " << i << ": got " << c.out[i] << " want " << want[i];
    }
  }
}

TEST(AmxAttentionTest, KernelEqualsTwin) {
  SKIP_WITHOUT_AMX();
  for (size_t si = 0; si < Shapes().size(); ++si) {
    const Shape& s = Shapes()[si];
    Case c = Make(s.q_heads, s.kv_heads, s.d, s.block_size, s.seqs, 10 + si);
    RunAll(c, false);
    const std::vector<float> got = c.out;
    RunAll(c, true);
    for (size_t i = 0; i < c.q.size(); ++i) ASSERT_EQ(got[i], c.out[i]) << "shape " << si << " at " << i;
  }
}

TEST(AmxAttentionTest, ATokenIsTheSameInAnyChunk) {
  SKIP_WITHOUT_AMX();
  // 37 new tokens after 20 cached, in one chunk; then each token as a
  // chunk of one (a decode step), and the tail as a chunk of 5.
  Case c = Make(32, 8, 64, 16, {{20, 37}}, 7);
  RunAll(c, false);
  const std::vector<float> whole = c.out;
  const AmxAttentionArgs a = Args(c);
  const int64_t row = c.q_heads * c.d;
  for (int64_t t : {0, 1, 15, 16, 36}) {
    std::vector<float> one(row + kGuard, kPoison);
    AmxAttentionArgs b = a;
    b.q = c.q.data() + t * row;
    b.out = one.data();
    for (int64_t h = 0; h < c.kv_heads; ++h) AmxAttentionHead(b, h, 0, 1, 20 + t, c.slots[0].data());
    for (int64_t i = 0; i < row; ++i) ASSERT_EQ(one[i], whole[t * row + i]) << "token " << t << " at " << i;
  }
  std::vector<float> tail(5 * row, kPoison);
  AmxAttentionArgs b = a;
  b.q = c.q.data() + 32 * row;
  b.out = tail.data();
  for (int64_t h = 0; h < c.kv_heads; ++h) AmxAttentionHead(b, h, 0, 5, 52, c.slots[0].data());
  for (int64_t i = 0; i < 5 * row; ++i) ASSERT_EQ(tail[i], whole[32 * row + i]) << "tail at " << i;
}

TEST(AmxAttentionTest, Fits) {
  EXPECT_TRUE(AmxAttentionFits(32, 8, 64));
  EXPECT_TRUE(AmxAttentionFits(16, 1, 128));
  EXPECT_FALSE(AmxAttentionFits(32, 1, 64));  // group of 32
  EXPECT_FALSE(AmxAttentionFits(4, 2, 96 + 8));
}

}  // namespace
}  // namespace strata::kernels::cpu
