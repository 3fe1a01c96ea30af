// AMX products on one thread with the weights where a real step finds
// them: `copies` packed copies of one [n, k] matrix are cycled, so with
// copies x size well past the L3 every product streams its weights from
// DRAM (as a forward pass does; it says so when they fit the L3 the
// system reports), and with copies = 1 they come from cache
// (as Google Benchmark's repeated calls in cpu_bench do). y is 64-byte
// aligned, as the CPU backend's buffers are. Prints the best and median
// GFLOP/s over `reps` passes and, with --check, compares y with the twin.
//
//   bazel-bin/kernels/cpu/amx_product_bench ROWS N K [COPIES [REPS]] [--check]
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/amx.h"
#include "kernels/cpu/amx_matmul.h"
#include "kernels/cpu/huge_pages.h"
#include "kernels/cpu/matmul.h"

namespace strata::kernels::cpu {
namespace {

bool ParsePositive(const char* s, int64_t max, int64_t* out) {
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0' || v < 1 || v > max) return false;
  *out = v;
  return true;
}

int Main(int argc, char** argv) {
  std::vector<std::string> args;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check") == 0) {
      check = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  int64_t rows = 0, n = 0, k = 0, copies = 1, reps = 10;
  if (args.size() < 3 || args.size() > 5 || !ParsePositive(args[0].c_str(), 65536, &rows) ||
      !ParsePositive(args[1].c_str(), 1 << 20, &n) || !ParsePositive(args[2].c_str(), 1 << 20, &k) ||
      (args.size() > 3 && !ParsePositive(args[3].c_str(), 256, &copies)) ||
      (args.size() > 4 && !ParsePositive(args[4].c_str(), 100000, &reps))) {
    std::fprintf(stderr,
                 "usage: amx_product_bench ROWS N K [COPIES [REPS]] [--check]\n"
                 "  ROWS in [1, 65536], N and K in [1, 2^20], COPIES in [1, 256], REPS in [1, 100000]\n");
    return 2;
  }
  if (const absl::Status s = AmxStatus(); !s.ok()) {
    std::fprintf(stderr, "amx_product_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::mt19937 rng(1);
  std::vector<uint16_t> w(n * k);
  for (uint16_t& v : w) v = static_cast<uint16_t>((rng() & 1 ? 0xbc00 : 0x3c00) | (rng() & 0x7f));  // +-[1, 2)
  std::vector<std::unique_ptr<HugePageArray<uint16_t>>> packed;
  for (int64_t c = 0; c < copies; ++c) {
    packed.push_back(std::make_unique<HugePageArray<uint16_t>>());
    if (!packed.back()->Allocate(AmxPackedSize(n, k))) {
      std::fprintf(stderr, "amx_product_bench: out of memory for %lld weight copies\n", static_cast<long long>(copies));
      return 1;
    }
    PackWeightsAmx(w.data(), n, k, packed.back()->data());
  }
  std::vector<float> x(rows * k);
  for (float& v : x) v = static_cast<float>(rng() % 2001) / 1000.0f - 1.0f;
  HugePageArray<uint16_t> xb;
  HugePageArray<float> y, twin;
  if (!xb.Allocate(AmxActRows(rows) * AmxActCols(k)) || !y.Allocate(rows * n) || (check && !twin.Allocate(rows * n))) {
    std::fprintf(stderr, "amx_product_bench: out of memory\n");
    return 1;
  }
  ToBf16Tiles(x.data(), rows, k, xb.data());
  MatMulArgs a;
  a.xb = xb.data();
  a.rows = rows;
  a.k = k;
  a.n = n;
  a.y = y.data();
  std::vector<double> seconds;
  for (int64_t r = 0; r < reps * copies; ++r) {
    a.w_bf16 = packed[r % copies]->data();
    const auto t0 = std::chrono::steady_clock::now();
    AmxMatMulRange(a, 0, n);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double flop = 2.0 * rows * n * k;
  std::printf("%lld x %lld x %lld, %lld weight copies (%.0f MiB): best %.0f, median %.0f GFLOP/s\n",
              static_cast<long long>(rows), static_cast<long long>(n), static_cast<long long>(k),
              static_cast<long long>(copies), copies * AmxPackedSize(n, k) * 2.0 / (1 << 20), flop / seconds[0] / 1e9,
              flop / seconds[seconds.size() / 2] / 1e9);
  // Weights from DRAM only when the copies are well past the last-level
  // cache: one Xeon VM reported a 480 MiB L3, which can hold 8 copies of
  // an 8192 x 2048 matrix.
  const double copy_bytes = AmxPackedSize(n, k) * 2.0;
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (copies > 1 && l3 > 0 && copies * copy_bytes < 2.0 * l3) {
    std::printf("note: %.0f MiB of copies against a %.0f MiB L3: the weights come from the L3, not DRAM; "
                "COPIES >= %.0f streams them from DRAM\n",
                copies * copy_bytes / (1 << 20), l3 / double(1 << 20), std::ceil(2.0 * l3 / copy_bytes));
  }
  if (check) {
    a.w_bf16 = packed[0]->data();
    a.y = twin.data();
    AmxMatMulRangeTwin(a, 0, n);
    int64_t bad = 0;
    for (int64_t i = 0; i < rows * n; ++i) bad += y[i] != twin[i];
    std::printf("outputs differing from the twin: %lld\n", static_cast<long long>(bad));
    if (bad != 0) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace strata::kernels::cpu

int main(int argc, char** argv) { return strata::kernels::cpu::Main(argc, argv); }
