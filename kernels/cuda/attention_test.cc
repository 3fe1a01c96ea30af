// The paged split-KV attention kernel against reference::Attention over a
// sweep: group sizes 1..16, head_dim 64 and 128, block sizes with ragged last
// blocks, decode batches, prefill, chunked prefill against cached keys, mixed
// batches, contexts up to 32K, with and without KV splits. Outputs are
// poisoned first and guard regions checked.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/test_util.h"
#include "kernels/reference/ops.h"
#include "model/dtype.h"

namespace strata::kernels::cuda {
namespace {

using testing::DeviceArray;
using testing::kPoison;

struct Case {
  std::string name;
  int q_heads, kv_heads, head_dim, block_size;
  // (cached_tokens, num_tokens) per sequence.
  std::vector<std::pair<int, int>> seqs;
};

class AttentionCudaTest : public testing::GpuTest {};

void RunCase(const Case& c, int target_blocks, std::mt19937& rng) {
  SCOPED_TRACE(absl::StrCat(c.name, " target_blocks ", target_blocks));
  StepLayout layout;
  int64_t blocks_needed = 0;
  for (auto [cached, n] : c.seqs) blocks_needed += (cached + n + c.block_size - 1) / c.block_size;
  KvCacheShape shape;
  shape.num_layers = 1;
  shape.num_blocks = blocks_needed + 3;
  shape.block_size = c.block_size;
  shape.num_kv_heads = c.kv_heads;
  shape.head_dim = c.head_dim;
  // Blocks handed out in a shuffled order, as a block manager would.
  std::vector<int32_t> ids(shape.num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  size_t next = 0;
  for (auto [cached, n] : c.seqs) {
    SequenceChunk s;
    s.cached_tokens = cached;
    s.num_tokens = n;
    const int blocks = (cached + n + c.block_size - 1) / c.block_size;
    for (int b = 0; b < blocks; ++b) s.block_table.push_back(ids[next++]);
    layout.sequences.push_back(s);
  }
  ASSERT_TRUE(ValidateStepLayout(layout, shape, 1 << 30).ok());
  const int64_t rows = layout.NumRows();
  const int64_t cache_n = shape.FloatsPerLayer();
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> k_f32(cache_n), v_f32(cache_n), q(rows * c.q_heads * c.head_dim);
  std::vector<uint16_t> k_bf16(cache_n), v_bf16(cache_n);
  for (int64_t i = 0; i < cache_n; ++i) {
    k_bf16[i] = model::FloatToBF16(normal(rng));
    v_bf16[i] = model::FloatToBF16(normal(rng));
    k_f32[i] = model::BF16ToFloat(k_bf16[i]);
    v_f32[i] = model::BF16ToFloat(v_bf16[i]);
  }
  for (float& x : q) x = normal(rng);
  std::vector<float> want(q.size());
  reference::Attention(layout, shape, k_f32.data(), v_f32.data(), q.data(), c.q_heads, want.data());

  AttentionDims dims{c.q_heads, c.kv_heads, c.head_dim, c.block_size};
  AttentionPlan plan = MakeAttentionPlan(layout, dims, target_blocks);
  DeviceArray<char> ws(std::max<int64_t>(plan.WorkspaceBytes(), 1));
  DeviceArray<uint16_t> dk(k_bf16), dv(v_bf16);
  DeviceArray<float> dq(q), dout(static_cast<int64_t>(q.size()), kPoison);
  ASSERT_EQ(UploadAttentionPlan(plan, ws.get(), nullptr), cudaSuccess);
  ASSERT_EQ(LaunchAttention(plan, ws.get(), dq.get(), reinterpret_cast<__nv_bfloat16*>(dk.get()),
                            reinterpret_cast<__nv_bfloat16*>(dv.get()), dout.get(), nullptr),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = dout.ToHost();
  ASSERT_TRUE(dout.GuardsIntact()) << "write outside the output";
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    const float tol = 1e-2f + 2e-2f * std::fabs(want[i]);
    if (!(std::fabs(got[i] - want[i]) <= tol)) {
      ++bad;
      ADD_FAILURE() << "element " << i << " (row " << i / (c.q_heads * c.head_dim) << ", head "
                    << (i / c.head_dim) % c.q_heads << "): got " << got[i] << " want " << want[i];
    }
  }
}

TEST_F(AttentionCudaTest, MatchesReferenceOverSweep) {
  std::mt19937 rng(7);
  const std::vector<Case> cases = {
      {"decode G1 d64", 4, 4, 64, 16, {{0, 1}, {4, 1}, {99, 1}, {1000, 1}}},
      {"decode G2 d128 bs7", 4, 2, 128, 7, {{12, 1}, {300, 1}}},
      {"decode G4 d128", 8, 2, 128, 16, {{0, 1}, {15, 1}, {16, 1}, {4096, 1}, {777, 1}}},
      {"decode G8 d64 bs32", 16, 2, 64, 32, {{31, 1}, {2049, 1}}},
      {"decode G16 d128 (405B per GPU)", 16, 1, 128, 16, {{8191, 1}, {100, 1}, {3, 1}}},
      {"decode G16 two kv heads", 32, 2, 128, 16, {{513, 1}, {64, 1}}},
      {"prefill G1 d128", 2, 2, 128, 16, {{0, 37}}},
      {"prefill G4 d64 bs5", 8, 2, 64, 5, {{0, 100}, {0, 3}}},
      {"prefill G16 d128", 16, 1, 128, 16, {{0, 130}}},
      {"chunked prefill G8", 16, 2, 128, 16, {{50, 20}, {200, 64}}},
      {"mixed batch G4", 8, 2, 128, 16, {{0, 33}, {500, 1}, {40, 9}, {7, 1}, {0, 1}}},
      {"mixed batch G16 ragged", 16, 1, 64, 11, {{129, 1}, {0, 19}, {64, 5}}},
      // Several tokens in one 16-row decode tile (each row its own limit).
      {"short chunks G2", 4, 2, 64, 16, {{10, 8}, {0, 3}, {33, 7}}},
      {"short chunks G1", 8, 8, 128, 5, {{5, 16}, {200, 2}, {0, 1}}},
      {"short chunks G4 many splits", 8, 2, 128, 16, {{3000, 4}, {1500, 2}}},
  };
  for (const Case& c : cases) {
    for (int target : {1, 132 * 4}) RunCase(c, target, rng);
  }
}

TEST_F(AttentionCudaTest, LongContextDecodeWithSplits) {
  std::mt19937 rng(11);
  RunCase({"decode G16 32K", 16, 1, 128, 16, {{32767, 1}}}, 132 * 4, rng);
  RunCase({"decode G8 20K batch 2", 8, 1, 128, 32, {{20000, 1}, {9000, 1}}}, 132 * 4, rng);
}

// After the plan upload a launch reads only device memory: captured in a
// CUDA graph and replayed, it gives the eager result bit for bit.
TEST_F(AttentionCudaTest, ReplaysInACudaGraph) {
  StepLayout layout;
  for (int i = 0; i < 3; ++i) {
    SequenceChunk s;
    s.cached_tokens = 700 * i + 5;
    s.num_tokens = 1;
    for (int b = 0; b < (s.cached_tokens + 16) / 16; ++b) s.block_table.push_back(static_cast<int32_t>(layout.sequences.size() * 100 + b));
    layout.sequences.push_back(s);
  }
  AttentionDims dims{16, 1, 128, 16};
  AttentionPlan plan = MakeAttentionPlan(layout, dims, 64);
  ASSERT_FALSE(plan.combine.empty()) << "the case should exercise the split combine too";
  const int64_t cache = 300 * 16 * 128;
  std::mt19937 rng(3);
  std::vector<uint16_t> kv(cache);
  for (auto& v : kv) v = model::FloatToBF16(std::normal_distribution<float>()(rng));
  std::vector<float> q(3 * 16 * 128);
  for (auto& v : q) v = std::normal_distribution<float>()(rng);
  DeviceArray<uint16_t> dk(kv), dv(kv);
  DeviceArray<float> dq(q), eager(q.size(), kPoison), replay(q.size(), kPoison);
  DeviceArray<char> ws(plan.WorkspaceBytes());
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ASSERT_EQ(UploadAttentionPlan(plan, ws.get(), stream), cudaSuccess);
  auto* k = reinterpret_cast<__nv_bfloat16*>(dk.get());
  auto* v = reinterpret_cast<__nv_bfloat16*>(dv.get());
  ASSERT_EQ(LaunchAttention(plan, ws.get(), dq.get(), k, v, eager.get(), stream), cudaSuccess);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(LaunchAttention(plan, ws.get(), dq.get(), k, v, replay.get(), stream), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(replay.ToHost(), eager.ToHost());
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(AttentionPlanTest, SplitsLongKeysAndKeepsShortOnesWhole) {
  StepLayout layout;
  SequenceChunk s;
  s.cached_tokens = 131071;
  s.num_tokens = 1;
  s.block_table.resize(131072 / 16);
  layout.sequences.push_back(s);
  AttentionDims dims{16, 1, 128, 16};
  AttentionPlan plan = MakeAttentionPlan(layout, dims, 528);
  EXPECT_TRUE(plan.items64.empty());
  EXPECT_GT(plan.items16.size(), 100u);
  ASSERT_EQ(plan.combine.size(), 1u);
  EXPECT_EQ(plan.combine[0].num_splits, static_cast<int>(plan.items16.size()));
  // Splits tile the key range exactly.
  int32_t at = 0;
  for (const AttnItem& it : plan.items16) {
    EXPECT_EQ(it.kv_begin, at);
    at = it.kv_end;
  }
  EXPECT_EQ(at, 131072);
  AttentionPlan whole = MakeAttentionPlan(layout, dims, 1);
  EXPECT_EQ(whole.items16.size(), 1u);
  EXPECT_TRUE(whole.combine.empty());
}

TEST(AttentionPlanTest, RejectsUnsupportedHeadDim) {
  AttentionPlan plan;
  plan.dims = {4, 2, 96, 16};
  EXPECT_EQ(LaunchAttention(plan, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr),
            cudaErrorInvalidValue);
  plan.dims = {5, 2, 128, 16};
  EXPECT_EQ(LaunchAttention(plan, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace strata::kernels::cuda
