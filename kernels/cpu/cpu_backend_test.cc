// The fast CPU backend's ops against the reference backend on seeded random
// inputs over a sweep of shapes: odd sizes, GQA ratios 1/4/8/16, head_dim 64
// and 128, ragged last KV blocks, mixed prefill + decode batches, bf16 and
// f32 KV storage, every ISA this CPU has. Outputs are poisoned first; each
// element must be within atol + rtol * |ref|.
#include "kernels/cpu/cpu_backend.h"

#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/reference/reference_backend.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

constexpr float kPoison = 1234567.0f;

std::vector<Isa> Present() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16, Isa::kAmx}) {
    if (IsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

std::vector<float> Random(int64_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> normal(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Values exactly representable in bf16, so bf16 storage loses nothing.
std::vector<float> RoundedRandom(int64_t n, std::mt19937& rng, float sd = 1.0f) {
  std::vector<float> v = Random(n, rng, sd);
  for (float& x : v) x = model::BF16ToFloat(model::FloatToBF16(x));
  return v;
}

struct HostTensor {
  std::vector<uint16_t> bf16;
  model::TensorView view;
};
HostTensor Bf16Tensor(const std::vector<float>& values, std::vector<int64_t> shape) {
  HostTensor t;
  for (float v : values) t.bf16.push_back(model::FloatToBF16(v));
  t.view.name = "w";
  t.view.dtype = model::DType::kBF16;
  t.view.shape = shape;
  t.view.data = reinterpret_cast<const uint8_t*>(t.bf16.data());
  t.view.num_bytes = t.bf16.size() * 2;
  return t;
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, float atol, float rtol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::fabs(got[i] - want[i]), atol + rtol * std::fabs(want[i]))
        << what << " at " << i << ": got " << got[i] << " want " << want[i];
  }
}

TEST(CpuBackendTest, RmsNormMatMulSwiGluEmbedMatchReference) {
  std::mt19937 rng(1);
  ReferenceBackend ref(1);
  for (Isa isa : Present()) {
    CpuBackend cpu({2, isa, model::DType::kBF16});
    for (auto [rows, n, k] : {std::tuple{1, 64, 64}, {3, 33, 130}, {17, 200, 96}, {5, 7, 2048}}) {
      const std::string what = absl::StrCat(IsaName(isa), " rows ", rows, " n ", n, " k ", k);
      HostTensor w = Bf16Tensor(Random(n * k, rng, 1.0f / std::sqrt(float(k))), {n, k});
      HostTensor norm = Bf16Tensor(Random(k, rng, 0.1f), {k});
      for (auto& v : norm.bf16) v = model::FloatToBF16(1.0f + model::BF16ToFloat(v));
      auto cw = cpu.LoadWeight(w.view, {});
      auto rw = ref.LoadWeight(w.view, {});
      auto cn = cpu.LoadWeight(norm.view, {});
      auto rn = ref.LoadWeight(norm.view, {});
      ASSERT_TRUE(cw.ok() && rw.ok() && cn.ok() && rn.ok());
      std::vector<float> x = Random(rows * k, rng, 2.0f);
      std::vector<float> got(rows * k, kPoison), want(rows * k);
      cpu.RmsNorm(x.data(), **cn, 1e-5f, rows, got.data());
      ref.RmsNorm(x.data(), **rn, 1e-5f, rows, want.data());
      ExpectClose(got, want, 1e-5f, 1e-5f, what + " rmsnorm");
      std::vector<float> y(rows * n, kPoison), yr(rows * n);
      cpu.MatMul(x.data(), rows, **cw, y.data());
      ref.MatMul(x.data(), rows, **rw, yr.data());
      const float rtol = isa == Isa::kAvx512Bf16 || isa == Isa::kAmx ? 3e-2f : 1e-4f;
      ExpectClose(y, yr, rtol * 2.0f, rtol, what + " matmul");
      std::vector<float> g = Random(rows * n, rng, 3.0f), u = Random(rows * n, rng);
      std::vector<float> act(rows * n, kPoison), actr(rows * n);
      cpu.SwiGlu(g.data(), u.data(), rows, n, act.data());
      ref.SwiGlu(g.data(), u.data(), rows, n, actr.data());
      // The vector exp (vec_exp.h) is within 2 ulp of std::exp.
      ExpectClose(act, actr, 1e-7f, 1e-6f, what + " swiglu");
      // The last two ids are outside the table (a vocab-parallel rank's
      // foreign ids): zero rows.
      const std::vector<int32_t> ids = {0, static_cast<int32_t>(n - 1), 3 % static_cast<int32_t>(n),
                                        static_cast<int32_t>(n), -1};
      std::vector<float> e(5 * k, kPoison), er(5 * k, kPoison);
      cpu.Embed(**cw, ids.data(), 5, e.data());
      ref.Embed(**rw, ids.data(), 5, er.data());
      EXPECT_EQ(e, er) << what;
      for (int64_t c = 3 * k; c < 5 * k; ++c) ASSERT_EQ(e[c], 0.0f) << what;
    }
  }
}

struct AttnCase {
  std::string name;
  int q_heads, kv_heads, head_dim, block_size;
  std::vector<std::pair<int, int>> seqs;  // (cached, new)
};

TEST(CpuBackendTest, AttentionAndRopeMatchReference) {
  const std::vector<AttnCase> cases = {
      {"decode G1 d64", 4, 4, 64, 16, {{0, 1}, {5, 1}, {100, 1}}},
      {"decode G4 d128 bs7", 8, 2, 128, 7, {{12, 1}, {300, 1}}},
      {"decode G8 d64", 16, 2, 64, 32, {{31, 1}, {700, 1}}},
      {"decode G16 d128", 16, 1, 128, 16, {{1000, 1}, {3, 1}}},
      {"prefill G4 d64 bs5", 8, 2, 64, 5, {{0, 40}}},
      {"chunked prefill G16", 16, 1, 128, 16, {{50, 20}}},
      {"mixed G4 ragged", 8, 2, 128, 11, {{0, 33}, {500, 1}, {40, 9}, {7, 1}}},
      {"decode G4 d64 long", 8, 2, 64, 16, {{4100, 1}, {16, 1}, {15, 1}, {47, 1}}},
      {"decode G2 d96 (no 16-key path)", 4, 2, 96, 16, {{200, 1}}},
  };
  // Attention must give the same bits on every ISA (the AVX-512 path scores
  // 16 keys at once): the first ISA's outputs, per case, to compare with.
  std::map<std::string, std::vector<float>> first_isa;
  for (Isa isa : Present()) {
    for (model::DType kv : {model::DType::kBF16, model::DType::kF32}) {
      CpuBackend cpu({2, isa, kv});
      ReferenceBackend ref(1);
      for (size_t ci = 0; ci < cases.size(); ++ci) {
        const AttnCase& c = cases[ci];
        std::mt19937 rng(2 + ci);  // the same inputs for every ISA
        const std::string key = absl::StrCat("kv ", model::DTypeName(kv), " ", c.name);
        const std::string what = absl::StrCat(IsaName(isa), " ", key);
        KvCacheShape shape;
        shape.num_layers = 2;
        shape.block_size = c.block_size;
        shape.num_kv_heads = c.kv_heads;
        shape.head_dim = c.head_dim;
        StepLayout layout;
        int64_t blocks = 0;
        for (auto [cached, n] : c.seqs) blocks += (cached + n + c.block_size - 1) / c.block_size;
        shape.num_blocks = blocks + 2;
        std::vector<int32_t> ids(shape.num_blocks);
        std::iota(ids.begin(), ids.end(), 0);
        std::shuffle(ids.begin(), ids.end(), rng);
        size_t next = 0;
        for (auto [cached, n] : c.seqs) {
          SequenceChunk s;
          s.cached_tokens = cached;
          s.num_tokens = n;
          s.position_offset = 7 * cached;
          for (int b = 0; b < (cached + n + c.block_size - 1) / c.block_size; ++b) s.block_table.push_back(ids[next++]);
          layout.sequences.push_back(s);
        }
        auto cc = cpu.AllocateKvCache(shape);
        auto rc = ref.AllocateKvCache(shape);
        ASSERT_TRUE(cc.ok() && rc.ok());
        // Fill every sequence's cached keys with a first step over the whole history.
        StepLayout history = layout;
        for (auto& s : history.sequences) {
          s.num_tokens += s.cached_tokens;
          s.cached_tokens = 0;
        }
        const int64_t hrows = history.NumRows(), width = c.kv_heads * c.head_dim;
        std::vector<float> hk = RoundedRandom(hrows * width, rng), hv = RoundedRandom(hrows * width, rng);
        ASSERT_TRUE(cpu.BeginStep(history).ok());
        ASSERT_TRUE(ref.BeginStep(history).ok());
        cpu.WriteKv(**cc, 1, hk.data(), hv.data());
        ref.WriteKv(**rc, 1, hk.data(), hv.data());
        // The step itself: RoPE on q, then attention over the cache.
        ASSERT_TRUE(cpu.BeginStep(layout).ok());
        ASSERT_TRUE(ref.BeginStep(layout).ok());
        const int64_t rows = layout.NumRows();
        std::vector<float> inv_freq(c.head_dim / 2);
        for (int i = 0; i < c.head_dim / 2; ++i) inv_freq[i] = std::pow(500000.0f, -2.0f * i / c.head_dim);
        std::vector<float> q = Random(rows * c.q_heads * c.head_dim, rng), qr = q;
        cpu.Rope(q.data(), c.q_heads, c.head_dim, inv_freq);
        ref.Rope(qr.data(), c.q_heads, c.head_dim, inv_freq);
        EXPECT_EQ(q, qr) << what << " rope";
        std::vector<float> got(q.size(), kPoison), want(q.size());
        cpu.Attention(**cc, 1, q.data(), c.q_heads, got.data());
        ref.Attention(**rc, 1, q.data(), c.q_heads, want.data());
        // amx runs bf16-cache attention on tiles (Q and P in bf16:
        // amx_attention_test checks it bit for bit against its twin); every
        // other ISA gives the same bits as the portable kernel.
        const bool tiles = isa == Isa::kAmx && kv == model::DType::kBF16 && c.head_dim % 32 == 0;
        ExpectClose(got, want, tiles ? 2e-2f : 2e-6f, tiles ? 2e-2f : 2e-5f, what + " attention");
        if (tiles) continue;
        auto [it, inserted] = first_isa.emplace(key, got);
        if (!inserted) EXPECT_TRUE(got == it->second) << what << ": attention differs between ISAs";
      }
    }
  }
}

// A buffer the machine cannot hold is refused with RESOURCE_EXHAUSTED, not
// handed out as a null pointer.
TEST(CpuBackendTest, ABufferPastMemoryIsRefused) {
  CpuBackend backend({1, Isa::kPortable, model::DType::kF32});
  for (int64_t floats : {int64_t{1} << 48, int64_t{1} << 60, std::numeric_limits<int64_t>::max()}) {
    auto b = backend.AllocateBuffer(floats);
    ASSERT_FALSE(b.ok()) << floats;
    EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted) << b.status();
  }
  auto small = backend.AllocateBuffer(1000);
  ASSERT_TRUE(small.ok());
  EXPECT_NE((*small)->data(), nullptr);
}

TEST(CpuBackendTest, NamesItsIsa) {
  CpuBackend cpu({1, Isa::kPortable, model::DType::kBF16});
  EXPECT_EQ(cpu.Name(), "cpu-portable");
}

}  // namespace
}  // namespace strata::kernels::cpu
