// The small CUDA ops, the cuBLASLt GEMM, the sampler and the backend's
// Sample op against the reference, on seeded random inputs over odd shapes; outputs poisoned and
// guard regions checked.
#include <algorithm>
#include <memory>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/sampling.h"
#include "kernels/cuda/test_util.h"
#include "kernels/reference/ops.h"
#include "kernels/reference/sampling.h"
#include "model/config.h"
#include "model/dtype.h"
#include "model/rope.h"

namespace strata::kernels::cuda {
namespace {

using testing::DeviceArray;
using testing::kPoison;

class OpsCudaTest : public testing::GpuTest {};

std::vector<float> Random(int64_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> normal(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, float atol, float rtol) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    if (!(std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]))) {
      ++bad;
      ADD_FAILURE() << "at " << i << ": got " << got[i] << " want " << want[i];
    }
  }
}

// y: [rows, n] against x: [rows, k] times bf16 w^T in double precision,
// within atol + rtol * sum |x_i w_i|.
void ExpectProduct(const std::vector<float>& x, const std::vector<uint16_t>& w, int64_t rows, int64_t n,
                   int64_t k, const std::vector<float>& y, double atol, double rtol) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < n; ++o) {
      double acc = 0, mag = 0;
      for (int64_t i = 0; i < k; ++i) {
        const double p = double(x[r * k + i]) * model::BF16ToFloat(w[o * k + i]);
        acc += p;
        mag += std::fabs(p);
      }
      ASSERT_LE(std::fabs(y[r * n + o] - acc), atol + rtol * mag)
          << "rows " << rows << " n " << n << " k " << k << " at " << r << "," << o;
    }
  }
}

TEST_F(OpsCudaTest, EmbedGathersBf16Rows) {
  std::mt19937 rng(1);
  for (auto [vocab, cols, n] : {std::tuple{512, 128, 7}, {1000, 33, 1}, {70, 4096, 16}}) {
    std::vector<uint16_t> table(vocab * cols);
    for (auto& t : table) t = model::FloatToBF16(std::normal_distribution<float>()(rng));
    std::vector<int32_t> ids(n);
    for (auto& id : ids) id = std::uniform_int_distribution<int>(0, vocab - 1)(rng);
    DeviceArray<uint16_t> dt(table);
    DeviceArray<int32_t> di(ids);
    DeviceArray<float> out(n * cols, kPoison);
    ASSERT_EQ(LaunchEmbed(reinterpret_cast<__nv_bfloat16*>(dt.get()), vocab, cols, di.get(), n, out.get(), nullptr),
              cudaSuccess);
    std::vector<float> want(n * cols);
    for (int i = 0; i < n; ++i) {
      for (int c = 0; c < cols; ++c) want[i * cols + c] = model::BF16ToFloat(table[ids[i] * cols + c]);
    }
    EXPECT_EQ(out.ToHost(), want);
    EXPECT_TRUE(out.GuardsIntact());
  }
}

TEST_F(OpsCudaTest, RopeMatchesReferenceAtLargePositions) {
  std::mt19937 rng(2);
  model::LlamaConfig config = *model::LlamaPreset("8b");
  const std::vector<float> inv_freq = model::RopeInverseFrequencies(config);
  for (auto [rows, heads] : {std::pair{1, 32}, {5, 8}, {33, 3}}) {
    const int64_t d = 128;
    std::vector<float> x = Random(rows * heads * d, rng);
    std::vector<int64_t> pos(rows);
    for (int r = 0; r < rows; ++r) pos[r] = r == 0 ? 131071 : std::uniform_int_distribution<int>(0, 130000)(rng);
    std::vector<float> want = x;
    reference::Rope(want.data(), rows, heads, d, pos.data(), inv_freq);
    DeviceArray<float> dx(x, kPoison);
    DeviceArray<int64_t> dp(pos);
    DeviceArray<float> df(inv_freq);
    ASSERT_EQ(LaunchRope(dx.get(), rows, heads, d, dp.get(), df.get(), nullptr), cudaSuccess);
    ExpectNear(dx.ToHost(), want, 2e-5f, 2e-5f);
    EXPECT_TRUE(dx.GuardsIntact());
  }
}

TEST_F(OpsCudaTest, WriteKvStoresBf16AtSlots) {
  std::mt19937 rng(3);
  const int64_t rows = 9, width = 2 * 64, slots_total = 40;
  std::vector<float> k = Random(rows * width, rng), v = Random(rows * width, rng);
  std::vector<int64_t> slots = {3, 39, 0, 17, 18, 19, 5, 6, 22};
  DeviceArray<float> dk(k), dv(v);
  DeviceArray<int64_t> ds(slots);
  DeviceArray<uint16_t> kc(slots_total * width, 0xFFFF), vc(slots_total * width, 0xFFFF);
  ASSERT_EQ(LaunchWriteKv(dk.get(), dv.get(), rows, width, ds.get(), reinterpret_cast<__nv_bfloat16*>(kc.get()),
                          reinterpret_cast<__nv_bfloat16*>(vc.get()), nullptr),
            cudaSuccess);
  const auto hk = kc.ToHost(), hv = vc.ToHost();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < width; ++c) {
      ASSERT_EQ(hk[slots[r] * width + c], model::FloatToBF16(k[r * width + c]));
      ASSERT_EQ(hv[slots[r] * width + c], model::FloatToBF16(v[r * width + c]));
    }
  }
  EXPECT_EQ(hk[1 * width], 0xFFFF) << "an untouched slot changed";
  EXPECT_TRUE(kc.GuardsIntact());
  EXPECT_TRUE(vc.GuardsIntact());
}

TEST_F(OpsCudaTest, SwiGluAddGatherCast) {
  std::mt19937 rng(4);
  for (int64_t n : {1, 2, 3, 1001, 65536 + 7}) {
    std::vector<float> g = Random(n, rng, 3.0f), u = Random(n, rng);
    std::vector<float> want(n);
    reference::SwiGlu(g.data(), u.data(), n, want.data());
    DeviceArray<float> dg(g), du(u), out(n, kPoison);
    ASSERT_EQ(LaunchSwiGlu(dg.get(), du.get(), n, out.get(), nullptr), cudaSuccess);
    ExpectNear(out.ToHost(), want, 1e-6f, 1e-5f);
    EXPECT_TRUE(out.GuardsIntact());

    ASSERT_EQ(LaunchAdd(dg.get(), du.get(), n, nullptr), cudaSuccess);
    std::vector<float> sum(n);
    for (int64_t i = 0; i < n; ++i) sum[i] = g[i] + u[i];
    EXPECT_EQ(dg.ToHost(), sum);

    DeviceArray<uint16_t> cast(n, 0xFFFF);
    ASSERT_EQ(LaunchCastToBf16(du.get(), n, reinterpret_cast<__nv_bfloat16*>(cast.get()), nullptr), cudaSuccess);
    const auto hc = cast.ToHost();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hc[i], model::FloatToBF16(u[i])) << i;
    EXPECT_TRUE(cast.GuardsIntact());
  }
  const int64_t cols = 77;
  std::vector<float> x = Random(10 * cols, rng);
  std::vector<int64_t> ids = {9, 0, 4, 4};
  DeviceArray<float> dx(x), out(4 * cols, kPoison);
  DeviceArray<int64_t> di(ids);
  ASSERT_EQ(LaunchGatherRows(dx.get(), cols, di.get(), 4, out.get(), nullptr), cudaSuccess);
  const auto h = out.ToHost();
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < cols; ++c) ASSERT_EQ(h[r * cols + c], x[ids[r] * cols + c]);
  }
  EXPECT_TRUE(out.GuardsIntact());
  EXPECT_EQ(LaunchSwiGlu(nullptr, nullptr, -1, nullptr, nullptr), cudaErrorInvalidValue);
}

TEST_F(OpsCudaTest, GemmMatchesDoubleReference) {
  std::mt19937 rng(5);
  auto gemm = LtGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  for (auto [rows, n, k] : {std::tuple{1, 4096, 4096}, {7, 1000, 336}, {3, 129, 72}, {64, 2048, 1024},
                            {17, 4099, 512}, {1, 128256 / 8, 2048}}) {
    std::vector<uint16_t> x(rows * k), w(static_cast<int64_t>(n) * k);
    std::normal_distribution<float> normal;
    for (auto& v : x) v = model::FloatToBF16(normal(rng));
    for (auto& v : w) v = model::FloatToBF16(0.05f * normal(rng));
    DeviceArray<uint16_t> dx(x), dw(w);
    DeviceArray<float> dy(static_cast<int64_t>(rows) * n, kPoison);
    absl::Status st = (*gemm)->MatMul(reinterpret_cast<__nv_bfloat16*>(dx.get()), rows,
                                      reinterpret_cast<__nv_bfloat16*>(dw.get()), n, k, dy.get(), nullptr);
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_TRUE(dy.GuardsIntact());
    std::vector<float> xf(x.size());
    for (size_t i = 0; i < x.size(); ++i) xf[i] = model::BF16ToFloat(x[i]);
    ExpectProduct(xf, w, rows, n, k, dy.ToHost(), 1e-5, 1e-4);
  }
  EXPECT_EQ((*gemm)->cached_plans(), 6u);
  EXPECT_FALSE((*gemm)->MatMul(nullptr, 1, nullptr, 0, 8, nullptr, nullptr).ok());
}

TEST_F(OpsCudaTest, GemvMatchesDoubleReference) {
  std::mt19937 rng(8);
  for (auto [rows, n, k] : {std::tuple{1, 4096, 4096}, {2, 1000, 336}, {3, 129, 72}, {8, 2048, 1024},
                            {5, 4099, 512}, {1, 7, 16384}, {7, 300, 8}}) {
    std::vector<float> x = Random(rows * k, rng);
    std::vector<uint16_t> w(static_cast<int64_t>(n) * k);
    std::normal_distribution<float> normal;
    for (auto& v : w) v = model::FloatToBF16(0.05f * normal(rng));
    DeviceArray<float> dx(x);
    DeviceArray<uint16_t> dw(w);
    DeviceArray<float> dy(static_cast<int64_t>(rows) * n, kPoison);
    ASSERT_TRUE(GemvSupports(rows, k));
    ASSERT_EQ(LaunchGemv(dx.get(), rows, reinterpret_cast<__nv_bfloat16*>(dw.get()), n, k, dy.get(), nullptr),
              cudaSuccess);
    EXPECT_TRUE(dy.GuardsIntact());
    ExpectProduct(x, w, rows, n, k, dy.ToHost(), 1e-6, 1e-5);
  }
  // Three weights sharing x in one launch equal three separate launches.
  {
    const int64_t k = 1024, rows = 2;
    const int64_t ns[3] = {700, 64, 64};
    std::vector<float> x = Random(rows * k, rng);
    DeviceArray<float> dx(x);
    std::vector<std::unique_ptr<DeviceArray<uint16_t>>> dws;
    std::vector<std::unique_ptr<DeviceArray<float>>> fused, single;
    GemvTargets t;
    t.count = 3;
    for (int i = 0; i < 3; ++i) {
      std::vector<uint16_t> w(ns[i] * k);
      for (auto& v : w) v = model::FloatToBF16(0.05f * std::normal_distribution<float>()(rng));
      dws.push_back(std::make_unique<DeviceArray<uint16_t>>(w));
      fused.push_back(std::make_unique<DeviceArray<float>>(rows * ns[i], kPoison));
      single.push_back(std::make_unique<DeviceArray<float>>(rows * ns[i], kPoison));
      t.w[i] = reinterpret_cast<__nv_bfloat16*>(dws[i]->get());
      t.n[i] = ns[i];
      t.y[i] = fused[i]->get();
      ASSERT_EQ(LaunchGemv(dx.get(), rows, t.w[i], ns[i], k, single[i]->get(), nullptr), cudaSuccess);
    }
    ASSERT_EQ(LaunchGemvMulti(dx.get(), rows, t, k, nullptr), cudaSuccess);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(fused[i]->ToHost(), single[i]->ToHost()) << "target " << i;
      EXPECT_TRUE(fused[i]->GuardsIntact());
    }
  }
  EXPECT_FALSE(GemvSupports(9, 64));
  EXPECT_FALSE(GemvSupports(1, 12));
  EXPECT_EQ(LaunchGemv(nullptr, 9, nullptr, 8, 64, nullptr, nullptr), cudaErrorInvalidValue);
}

TEST_F(OpsCudaTest, SamplingMatchesReferenceSampler) {
  std::mt19937 rng(6);
  for (int64_t vocab : {1000, 128256}) {
    const int64_t rows = 48;
    std::vector<float> logits = Random(rows * vocab, rng, 3.0f);
    // Row 0: a tie for the maximum; the lowest id must win greedy.
    logits[5] = logits[17] = 100.0f;
    std::vector<SamplingParams> params(rows);
    for (int r = 0; r < rows; ++r) {
      SamplingParams& p = params[r];
      p.temperature = r % 6 == 0 ? 0.0f : 0.5f + 0.1f * (r % 7);
      p.top_k = (r % 3 == 0) ? 0 : (r % 3 == 1 ? 40 : 1);
      p.top_p = (r % 4 == 0) ? 1.0f : (r % 4 == 1 ? 0.9f : 0.5f);
      p.seed = 1000 + r;
      p.step = r * 3;
    }
    DeviceArray<float> dl(logits), scratch(rows * vocab);
    DeviceArray<SamplingParams> dp(params);
    DeviceArray<int32_t> ids(rows, -7);
    ASSERT_EQ(LaunchSample(dl.get(), rows, vocab, dp.get(), scratch.get(), ids.get(), nullptr), cudaSuccess);
    const auto got = ids.ToHost();
    EXPECT_TRUE(ids.GuardsIntact());
    int mismatches = 0;
    for (int r = 0; r < rows; ++r) {
      const int32_t want = reference::Sample(logits.data() + r * vocab, vocab, params[r]);
      ASSERT_GE(got[r], 0);
      ASSERT_LT(got[r], vocab);
      if (got[r] != want) {
        // Only float summation order differs; allow a rare boundary case.
        ++mismatches;
        ASSERT_GT(params[r].temperature, 0.0f) << "greedy must match exactly, row " << r;
      }
    }
    EXPECT_EQ(got[0], 5) << "greedy tie must pick the lowest id";
    EXPECT_LE(mismatches, 1) << "vocab " << vocab;
  }
}

// Backend::Sample on the device against reference::SampleRow: a mix of
// greedy and tempered draws, logprobs -1 .. 20, targets and idle rows, over
// vocab sizes odd and even up to the real 128256.
TEST_F(OpsCudaTest, BackendSampleMatchesTheHostSampler) {
  auto backend = CudaBackend::Create();
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::mt19937 rng(9);
  for (int64_t vocab : {1, 2, 7, 1000, 4099, 128256}) {
    const int64_t rows = 45;
    std::vector<float> logits = Random(rows * vocab, rng, 3.0f);
    // Even rows: a tie for the top; the lower id comes first.
    for (int64_t r = 0; r < rows && vocab >= 7; r += 2) logits[r * vocab + 3] = logits[r * vocab + 5] = 50.0f;
    std::vector<SampleRequest> requests(rows);
    for (int64_t r = 0; r < rows; ++r) {
      SampleRequest& q = requests[r];
      q.sample = r % 5 != 4;
      q.params.temperature = r % 3 == 0 ? 0.0f : 0.4f + 0.3f * (r % 4);
      q.params.top_k = r % 4 == 1 ? 5 : 0;
      q.params.top_p = r % 4 == 2 ? 0.8f : 1.0f;
      q.params.seed = 77 + r;
      q.params.step = r;
      q.logprobs = std::min<int32_t>(static_cast<int32_t>(r % 23) - 1, kMaxTopLogprobs);
      q.target = r % 2 == 0 ? static_cast<int32_t>((r * 7919) % vocab) : -1;
    }
    auto buffer = (*backend)->AllocateBuffer(rows * vocab);
    ASSERT_TRUE(buffer.ok());
    ASSERT_TRUE((*backend)->CopyFromHost(logits.data(), rows * vocab, (*buffer)->data()).ok());
    std::vector<SampleResult> got(rows);
    for (SampleResult& g : got) {  // poisoned: the kernel must write every field
      g.token = g.num_top = -7;
      g.logprob = g.target_logprob = kPoison;
      for (TokenLogprob& t : g.top) t = {-7, kPoison};
    }
    ASSERT_TRUE((*backend)->Sample((*buffer)->data(), vocab, requests, absl::MakeSpan(got)).ok());
    int mismatches = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = logits.data() + r * vocab;
      const SampleRequest& q = requests[r];
      const SampleResult want = reference::SampleRow(row, vocab, q);
      const std::string where = "vocab " + std::to_string(vocab) + " row " + std::to_string(r);
      auto near = [&](float g, float w, const std::string& what) {
        EXPECT_LE(std::fabs(g - w), 1e-5f + 1e-5f * std::fabs(w)) << where << " " << what << ": got " << g
                                                                  << " want " << w;
      };
      if (got[r].token != want.token) {
        // Only float summation order differs; allow a rare boundary case.
        ++mismatches;
        ASSERT_TRUE(q.sample && q.params.temperature > 0.0f) << "greedy must match exactly, " << where;
        ASSERT_GE(got[r].token, 0);
        ASSERT_LT(got[r].token, vocab);
      }
      const reference::RowLogSoftmax ls = reference::LogSoftmaxOf(row, vocab);
      if (q.sample && q.logprobs >= 0) near(got[r].logprob, ls.At(row[got[r].token]), "logprob");
      if (q.target >= 0) near(got[r].target_logprob, want.target_logprob, "target");
      ASSERT_EQ(got[r].num_top, want.num_top) << where;
      for (int k = 0; k < kMaxTopLogprobs; ++k) {
        EXPECT_EQ(got[r].top[k].token, want.top[k].token) << where << " top " << k;
        near(got[r].top[k].logprob, want.top[k].logprob, "top " + std::to_string(k));
      }
    }
    if (vocab >= 7) {
      EXPECT_EQ(got[0].token, 3) << "greedy tie must pick the lowest id";
    }
    EXPECT_LE(mismatches, 1) << "vocab " << vocab;
  }
  EXPECT_EQ((*backend)->KvBytesPerValue(), 2);
  EXPECT_NE((*backend)->NativeStream(), nullptr);
}

}  // namespace
}  // namespace strata::kernels::cuda
