// Google Benchmark of the fast CPU backend's ops on 1b-preset shapes, with
// the machine's ceilings (read bandwidth, FMA peak) as benchmarks of their
// own so every run reports both. Counters: bytes_per_second for
// memory-bound ops, FLOPS for products.
//   bazel run -c opt //kernels:cpu_bench -- --benchmark_filter=MatMul
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/roofline.h"
#include "model/dtype.h"

namespace strata::kernels::cpu {
namespace {

std::vector<uint16_t> RandomBf16(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = model::FloatToBF16(normal(rng));
  return v;
}

void BM_ReadBandwidth(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  double bw = 0;
  for (auto _ : state) bw = MeasureReadBandwidth(threads, int64_t{1} << 30, 1);
  state.counters["bytes_per_second"] = bw;
}
BENCHMARK(BM_ReadBandwidth)->Arg(1)->Arg(2)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_FmaPeak(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  double flops = 0;
  for (auto _ : state) flops = MeasureFmaPeak(threads);
  state.counters["FLOPS"] = flops;
}
BENCHMARK(BM_FmaPeak)->Arg(1)->Arg(2)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Bf16DotPeak(benchmark::State& state) {
  double flops = 0;
  for (auto _ : state) flops = MeasureBf16DotPeak(static_cast<int>(state.range(0)));
  state.counters["FLOPS"] = flops;
}
BENCHMARK(BM_Bf16DotPeak)->Arg(1)->Arg(2)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// The register-only tile loop (0 where AMX cannot run).
void BM_AmxPeak(benchmark::State& state) {
  double flops = 0;
  for (auto _ : state) flops = MeasureAmxPeak(static_cast<int>(state.range(0)));
  state.counters["FLOPS"] = flops;
}
BENCHMARK(BM_AmxPeak)->Arg(1)->Arg(2)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// args: rows, n, k, threads, ISA (an Isa value; the best present where
// that one is missing).
void BM_MatMul(benchmark::State& state) {
  const int64_t rows = state.range(0), n = state.range(1), k = state.range(2);
  const Isa want = static_cast<Isa>(state.range(4));
  CpuBackend b({static_cast<int>(state.range(3)), IsaSupported(want) ? want : BestIsa(), model::DType::kBF16});
  std::vector<uint16_t> w = RandomBf16(n * k, 1);
  model::TensorView t;
  t.name = "w";
  t.dtype = model::DType::kBF16;
  t.shape = {n, k};
  t.data = reinterpret_cast<const uint8_t*>(w.data());
  t.num_bytes = w.size() * 2;
  auto weight = b.LoadWeight(t, {});
  std::vector<float> x(rows * k, 0.5f), y(rows * n);
  for (auto _ : state) {
    b.MatMul(x.data(), rows, **weight, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["bytes_per_second"] =
      benchmark::Counter(2.0 * n * k, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOPS"] = benchmark::Counter(2.0 * rows * n * k, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(IsaName(b.isa()));
}
constexpr int kVec = static_cast<int>(Isa::kAvx512Bf16), kTiles = static_cast<int>(Isa::kAmx);
BENCHMARK(BM_MatMul)
    ->ArgsProduct({{1, 16, 128}, {2048, 8192}, {2048}, {1, 2}, {kVec, kTiles}})
    ->ArgsProduct({{1, 16, 128, 1024}, {2048}, {8192}, {1, 2}, {kVec, kTiles}})
    ->ArgsProduct({{64, 1024}, {8192}, {2048}, {1, 2}, {kTiles}})
    ->Args({16, 32768, 2048, 1, kVec})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// args: context (keys each new token ends at), batch, threads, ISA, new
// tokens per sequence (1: decode; more: a prompt chunk ending at context).
// 1b shapes: 32 query heads, 8 KV heads, d 64.
void BM_Attention(benchmark::State& state) {
  const int64_t context = state.range(0), batch = state.range(1), fresh = state.range(4);
  const Isa want = static_cast<Isa>(state.range(3));
  CpuBackend b({static_cast<int>(state.range(2)), IsaSupported(want) ? want : BestIsa(), model::DType::kBF16});
  KvCacheShape s;
  s.num_layers = 1;
  s.block_size = 16;
  s.num_kv_heads = 8;
  s.head_dim = 64;
  s.num_blocks = batch * ((context + 15) / 16);
  auto cache = b.AllocateKvCache(s);
  StepLayout layout;
  int32_t next = 0;
  for (int64_t i = 0; i < batch; ++i) {
    SequenceChunk c;
    c.cached_tokens = static_cast<int32_t>(context - fresh);
    c.num_tokens = static_cast<int32_t>(fresh);
    for (int64_t j = 0; j < (context + 15) / 16; ++j) c.block_table.push_back(next++);
    layout.sequences.push_back(c);
  }
  (void)b.BeginStep(layout);
  std::vector<float> q(batch * fresh * 32 * 64, 0.1f), out(q.size());
  for (auto _ : state) {
    b.Attention(**cache, 0, q.data(), 32, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  // Keys and values read once per sequence and KV head; FLOPs of QK^T and
  // PV over the causal triangle.
  state.counters["bytes_per_second"] =
      benchmark::Counter(2.0 * 2 * batch * context * 8 * 64, benchmark::Counter::kIsIterationInvariantRate);
  const double pairs = batch * (fresh * (context - fresh) + fresh * (fresh + 1) / 2.0);
  state.counters["FLOPS"] = benchmark::Counter(4.0 * pairs * 32 * 64, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(IsaName(b.isa()));
}
BENCHMARK(BM_Attention)
    ->ArgsProduct({{512, 4096}, {1, 16}, {1, 2}, {kVec, kTiles}, {1}})
    ->ArgsProduct({{128}, {1}, {1, 2}, {kVec, kTiles}, {128}})
    ->ArgsProduct({{1024}, {1}, {1, 2}, {kVec, kTiles}, {128, 1024}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void BM_RmsNorm(benchmark::State& state) {
  const int64_t rows = state.range(0), dim = 2048;
  CpuBackend b({1, BestIsa(), model::DType::kBF16});
  std::vector<uint16_t> w = RandomBf16(dim, 2);
  model::TensorView t;
  t.name = "norm";
  t.dtype = model::DType::kBF16;
  t.shape = {dim};
  t.data = reinterpret_cast<const uint8_t*>(w.data());
  t.num_bytes = w.size() * 2;
  auto weight = b.LoadWeight(t, {});
  std::vector<float> x(rows * dim, 0.3f), out(x.size());
  for (auto _ : state) {
    b.RmsNorm(x.data(), **weight, 1e-5f, rows, out.data());
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_RmsNorm)->Arg(1)->Arg(128)->Unit(benchmark::kMicrosecond);

void BM_SwiGlu(benchmark::State& state) {
  const int64_t rows = state.range(0), width = 8192;
  CpuBackend b({1, BestIsa(), model::DType::kBF16});
  std::vector<float> g(rows * width, 0.2f), u(g.size(), 0.1f), out(g.size());
  for (auto _ : state) {
    b.SwiGlu(g.data(), u.data(), rows, width, out.data());
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_SwiGlu)->Arg(1)->Arg(128)->Unit(benchmark::kMicrosecond);

void BM_Rope(benchmark::State& state) {
  const int64_t rows = state.range(0);
  CpuBackend b({1, BestIsa(), model::DType::kBF16});
  StepLayout layout;
  SequenceChunk c;
  c.num_tokens = static_cast<int32_t>(rows);
  c.block_table.assign((rows + 15) / 16, 0);
  layout.sequences.push_back(c);
  (void)b.BeginStep(layout);
  std::vector<float> inv_freq(32);
  for (int i = 0; i < 32; ++i) inv_freq[i] = std::pow(500000.0f, -i / 32.0f);
  std::vector<float> x(rows * 32 * 64, 0.5f);
  for (auto _ : state) {
    b.Rope(x.data(), 32, 64, inv_freq);
    benchmark::DoNotOptimize(x.data());
  }
}
BENCHMARK(BM_Rope)->Arg(1)->Arg(128)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace strata::kernels::cpu

BENCHMARK_MAIN();
