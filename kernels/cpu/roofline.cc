#include "kernels/cpu/roofline.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/cpu/amx.h"
#include "kernels/cpu/huge_pages.h"
#include "kernels/cpu/isa.h"

namespace strata::kernels::cpu {
namespace {

using Clock = std::chrono::steady_clock;

__attribute__((target_clones("avx512f", "avx2", "default"))) float SumRange(const float* p, int64_t n) {
  float lanes[64] = {};
  for (int64_t i = 0; i + 64 <= n; i += 64)
    for (int l = 0; l < 64; ++l) lanes[l] += p[i + l];
  float s = 0;
  for (float v : lanes) s += v;
  return s;
}

// The same sum with each 256 bytes prefetched into L2 1 KiB ahead. On the
// Intel (Sapphire Rapids) VM the hardware prefetcher alone keeps too few
// lines in flight: one thread reads 16-17 GB/s plainly and 19-20 GB/s
// like this (two threads: 30 and 36), and the AMX products, which
// prefetch, stream faster than the plain loop. The ceiling is the better
// of the two, so no kernel passes it (further ahead was slower).
__attribute__((target_clones("avx512f", "avx2", "default"))) float SumRangePrefetch(const float* p, int64_t n) {
  float lanes[64] = {};
  for (int64_t i = 0; i + 64 <= n; i += 64) {
    const char* ahead = reinterpret_cast<const char*>(p + i) + 1024;
    asm volatile("prefetcht1 %0" : : "m"(ahead[0]));
    asm volatile("prefetcht1 %0" : : "m"(ahead[64]));
    asm volatile("prefetcht1 %0" : : "m"(ahead[128]));
    asm volatile("prefetcht1 %0" : : "m"(ahead[192]));
    for (int l = 0; l < 64; ++l) lanes[l] += p[i + l];
  }
  float s = 0;
  for (float v : lanes) s += v;
  return s;
}

template <typename F>
double RunThreads(int threads, F&& f) {
  std::vector<std::thread> pool;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point start;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ++ready;
      while (!go.load()) {
      }
      f(t);
    });
  }
  while (ready.load() < threads) {
  }
  start = Clock::now();
  go = true;
  for (auto& th : pool) th.join();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

__attribute__((target("avx512f"))) double FmaAvx512(int64_t iters) {
  __m512 a[12];
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(1.0f + i);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  }
  float out[16];
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  _mm512_storeu_ps(out, s);
  return out[0] + iters * 12.0 * 16 * 2 * 0;  // keep the chains alive
}

__attribute__((target("avx2,fma"))) double FmaAvx2(int64_t iters) {
  __m256 a[12];
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(1.0f + i);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  }
  float out[8];
  __m256 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
  _mm256_storeu_ps(out, s);
  return out[0];
}

// vdpbf16ps: 32 bf16 products (64 FLOP) per instruction.
__attribute__((target("avx512f,avx512bf16"))) double DotBf16(int64_t iters) {
  __m512 a[12];
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380);
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(1.0f + i);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm512_dpbf16_ps(a[i], x, y);
  }
  float out[16];
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  _mm512_storeu_ps(out, s);
  return out[0];
}

// Four accumulator tiles, each updated once per iteration from the same
// operand tiles (zeros: the rate does not depend on the values).
__attribute__((target("amx-tile,amx-bf16"))) double TileLoop(int64_t iters) {
  ConfigureTiles();
  for (int64_t it = 0; it < iters; ++it) {
    STRATA_TILE_DPBF16(0, 4, 6);
    STRATA_TILE_DPBF16(1, 4, 7);
    STRATA_TILE_DPBF16(2, 5, 6);
    STRATA_TILE_DPBF16(3, 5, 7);
  }
  alignas(64) float out[16 * 16];
  STRATA_TILE_STORE(0, out, 64);
  ReleaseTiles();
  return out[0];
}

}  // namespace

double MeasureAmxPeak(int threads) {
  threads = std::max(1, threads);
  if (!IsaSupported(Isa::kAmx)) return 0;
  const int64_t iters = 2'000'000;
  std::vector<double> sink(threads);
  double best = 1e30;
  for (int r = 0; r < 2; ++r) best = std::min(best, RunThreads(threads, [&](int t) { sink[t] = TileLoop(iters); }));
  volatile double s = sink[0];
  (void)s;
  return threads * static_cast<double>(iters) * 4 * 16384 / best;
}

double MeasureBf16DotPeak(int threads) {
  threads = std::max(1, threads);
  if (!IsaSupported(Isa::kAvx512Bf16)) return 0;
  const int64_t iters = 20'000'000;
  std::vector<double> sink(threads);
  double best = 1e30;
  for (int r = 0; r < 2; ++r) best = std::min(best, RunThreads(threads, [&](int t) { sink[t] = DotBf16(iters); }));
  volatile double s = sink[0];
  (void)s;
  return threads * static_cast<double>(iters) * 12 * 64 / best;
}

double MeasureReadBandwidth(int threads, int64_t bytes, int repeats) {
  threads = std::max(1, threads);
  const int64_t n = bytes / 4 / 64 * 64;
  // The same kind of memory as the packed weights (huge pages), so the
  // ceiling and the decode step see the same TLB behaviour.
  HugePageArray<float> mem;
  if (!mem.Allocate(n)) return 0;
  float* buf = mem.data();
  // First touch from the threads that will read, so pages spread as they run.
  RunThreads(threads, [&](int t) {
    const int64_t b = n * t / threads, e = n * (t + 1) / threads;
    for (int64_t i = b; i < e; ++i) buf[i] = 1.0f;
  });
  double best = 1e30;
  std::vector<float> sums(threads);
  for (int r = 0; r < 2 * repeats; ++r) {  // plain and prefetching passes alternate
    best = std::min(best, RunThreads(threads, [&](int t) {
      const int64_t b = (n * t / threads) / 64 * 64, e = (n * (t + 1) / threads) / 64 * 64;
      // The last KiB of a thread's range stays out of the prefetching sum's
      // reach past the buffer's end.
      sums[t] = r % 2 == 0 ? SumRange(buf + b, e - b) : SumRangePrefetch(buf + b, std::max<int64_t>(0, e - b - 256) / 64 * 64);
    }));
  }
  volatile float sink = sums[0];
  (void)sink;
  return static_cast<double>(n) * 4 / best;
}

double MeasureFmaPeak(int threads) {
  threads = std::max(1, threads);
  const int64_t iters = 20'000'000;
  const bool avx512 = IsaSupported(Isa::kAvx512);
  const bool avx2 = IsaSupported(Isa::kAvx2);
  if (!avx512 && !avx2) return 0;
  std::vector<double> sink(threads);
  double best = 1e30;
  for (int r = 0; r < 2; ++r) {
    best = std::min(best, RunThreads(threads, [&](int t) { sink[t] = avx512 ? FmaAvx512(iters) : FmaAvx2(iters); }));
  }
  volatile double s = sink[0];
  (void)s;
  const double lanes = avx512 ? 16 : 8;
  return threads * static_cast<double>(iters) * 12 * lanes * 2 / best;
}

}  // namespace strata::kernels::cpu
