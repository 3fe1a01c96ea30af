// Tile-loop probes behind amx_matmul.cc's blocking, on one thread: the
// TDPBF16PS peak on register tiles; a 2 x 2 block (4 sums, 2 activation
// and 2 weight tiles per 32-k chunk, software-pipelined as the kernel is)
// with its two operands streamed from buffers of a given size, so from L1,
// L2 or beyond; one operand fixed in L1 and the other streamed; and k
// spans: row pairs sharing a span of weights in L1 while the activations
// stream with the T1 hint, sums stored and reloaded between spans, with
// and without the switch between pairs overlapped. Prints TFLOP/s each.
//
//   bazel-bin/kernels/cpu/amx_tile_bench
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "kernels/cpu/amx.h"
#include "kernels/cpu/huge_pages.h"

namespace strata::kernels::cpu {
namespace {

#define STRATA_PROBE __attribute__((target("amx-tile,amx-bf16,avx512f")))
constexpr int64_t kTile = 512;  // bf16 elements of a tile

STRATA_PROBE void Peak(int64_t chunks) {
  for (int64_t i = 0; i < chunks; ++i) {
    STRATA_TILE_DPBF16(0, 4, 6);
    STRATA_TILE_DPBF16(1, 4, 7);
    STRATA_TILE_DPBF16(2, 5, 6);
    STRATA_TILE_DPBF16(3, 5, 7);
  }
}

// 2 x 2 blocks: the activation pair streams over `a_tiles` tiles, the
// weight pair over `w_tiles` (2: fixed), wrapping around.
STRATA_PROBE void Blocks(const uint16_t* a, int64_t a_tiles, const uint16_t* w, int64_t w_tiles, int64_t chunks) {
  int64_t ai = 0, wi = 0;
  STRATA_TILE_LOAD(4, a, 64);
  STRATA_TILE_LOAD(6, w, 64);
  STRATA_TILE_LOAD(5, a + kTile, 64);
  STRATA_TILE_LOAD(7, w + kTile, 64);
  for (int64_t i = 0; i < chunks; ++i) {
    ai = (ai + 2) % a_tiles;
    wi = (wi + 2) % w_tiles;
    const uint16_t* at = a + ai * kTile;
    const uint16_t* wt = w + wi * kTile;
    STRATA_TILE_DPBF16(0, 4, 6);
    STRATA_TILE_DPBF16(1, 4, 7);
    STRATA_TILE_LOAD(4, at, 64);
    STRATA_TILE_DPBF16(2, 5, 6);
    STRATA_TILE_LOAD(6, wt, 64);
    STRATA_TILE_DPBF16(3, 5, 7);
    STRATA_TILE_LOAD(5, at + kTile, 64);
    STRATA_TILE_LOAD(7, wt + kTile, 64);
  }
}

// k spans of `span` chunks: `pairs` row pairs in turn, each loading its
// sums (4 KiB at c + p * 1024), running the span's chunks (weights: the
// same 2 x span tiles at w; activations streamed over `a_tiles` with the
// T1 hint) and storing its sums. `overlap`: the next pair's operands and
// sums load behind this pair's last products, as SpanPairs does.
template <bool kOverlap>
STRATA_PROBE void Spans(const uint16_t* a, int64_t a_tiles, const uint16_t* w, int64_t span, float* c, int64_t pairs,
                        int64_t chunks) {
  int64_t ai = 0, done = 0, p = 0;
  auto next_a = [&] {
    const uint16_t* at = a + ai * kTile;
    ai = (ai + 2 * span) % a_tiles;
    return at;
  };
  const uint16_t* at = next_a();
  float* cp = c;
  STRATA_TILE_LOAD(0, cp, 64);
  STRATA_TILE_LOAD(1, cp + 256, 64);
  STRATA_TILE_LOAD(2, cp + 512, 64);
  STRATA_TILE_LOAD(3, cp + 768, 64);
  STRATA_TILE_LOAD_T1(4, at, 64);
  STRATA_TILE_LOAD(6, w, 64);
  STRATA_TILE_LOAD_T1(5, at + kTile, 64);
  STRATA_TILE_LOAD(7, w + kTile, 64);
  for (;;) {
    for (int64_t ch = 1; ch < span; ++ch) {
      const uint16_t* wt = w + ch * 2 * kTile;
      const uint16_t* a2 = at + ch * 2 * kTile;
      STRATA_TILE_DPBF16(0, 4, 6);
      STRATA_TILE_DPBF16(1, 4, 7);
      STRATA_TILE_LOAD_T1(4, a2, 64);
      STRATA_TILE_DPBF16(2, 5, 6);
      STRATA_TILE_LOAD(6, wt, 64);
      STRATA_TILE_DPBF16(3, 5, 7);
      STRATA_TILE_LOAD_T1(5, a2 + kTile, 64);
      STRATA_TILE_LOAD(7, wt + kTile, 64);
    }
    done += span;
    p = (p + 1) % pairs;
    float* cn = c + p * 1024;
    const uint16_t* an = next_a();
    if (kOverlap) {
      STRATA_TILE_DPBF16(0, 4, 6);
      STRATA_TILE_DPBF16(1, 4, 7);
      STRATA_TILE_LOAD_T1(4, an, 64);
      STRATA_TILE_DPBF16(2, 5, 6);
      STRATA_TILE_LOAD(6, w, 64);
      STRATA_TILE_DPBF16(3, 5, 7);
      STRATA_TILE_LOAD_T1(5, an + kTile, 64);
      STRATA_TILE_LOAD(7, w + kTile, 64);
      STRATA_TILE_STORE(0, cp, 64);
      STRATA_TILE_LOAD(0, cn, 64);
      STRATA_TILE_STORE(1, cp + 256, 64);
      STRATA_TILE_LOAD(1, cn + 256, 64);
      STRATA_TILE_STORE(2, cp + 512, 64);
      STRATA_TILE_LOAD(2, cn + 512, 64);
      STRATA_TILE_STORE(3, cp + 768, 64);
      STRATA_TILE_LOAD(3, cn + 768, 64);
    } else {
      STRATA_TILE_DPBF16(0, 4, 6);
      STRATA_TILE_DPBF16(1, 4, 7);
      STRATA_TILE_DPBF16(2, 5, 6);
      STRATA_TILE_DPBF16(3, 5, 7);
      STRATA_TILE_STORE(0, cp, 64);
      STRATA_TILE_STORE(1, cp + 256, 64);
      STRATA_TILE_STORE(2, cp + 512, 64);
      STRATA_TILE_STORE(3, cp + 768, 64);
      STRATA_TILE_LOAD(0, cn, 64);
      STRATA_TILE_LOAD(1, cn + 256, 64);
      STRATA_TILE_LOAD(2, cn + 512, 64);
      STRATA_TILE_LOAD(3, cn + 768, 64);
      STRATA_TILE_LOAD_T1(4, an, 64);
      STRATA_TILE_LOAD(6, w, 64);
      STRATA_TILE_LOAD_T1(5, an + kTile, 64);
      STRATA_TILE_LOAD(7, w + kTile, 64);
    }
    if (done >= chunks) break;
    cp = cn;
    at = an;
  }
}

template <typename F>
void Report(const std::string& name, int64_t chunks, F f) {
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  // 4 products of 16 x 16 x 32 multiply-adds per chunk.
  std::printf("%-58s %.2f TFLOP/s\n", name.c_str(), chunks * 4 * 16384.0 / best / 1e12);
}

int Main() {
  if (const absl::Status s = AmxStatus(); !s.ok()) {
    std::fprintf(stderr, "amx_tile_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  HugePageArray<uint16_t> buf;
  HugePageArray<float> sums;
  if (!buf.Allocate(int64_t{64} << 20) || !sums.Allocate(64 * 1024)) {
    std::fprintf(stderr, "amx_tile_bench: out of memory\n");
    return 1;
  }
  for (int64_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint16_t>(0x3c00 | (i & 0x3f));
  const uint16_t* a = buf.data();
  const uint16_t* w = buf.data() + (int64_t{32} << 20);
  constexpr int64_t kChunks = 2000000;
  ConfigureTiles();
  Report("peak (register tiles)", kChunks, [] { Peak(kChunks); });
  for (int64_t kib : {8, 128, 512, 1536, 8192}) {
    const std::string size = std::to_string(kib) + " KiB";
    Report("2 x 2, both operands streamed over " + size + " each", kChunks, [&] { Blocks(a, kib, w, kib, kChunks); });
    Report("2 x 2, weights fixed, activations over " + size, kChunks, [&] { Blocks(a, kib, w, 2, kChunks); });
  }
  for (int64_t span : {8, 16, 32}) {
    for (int64_t pairs : {1, 8}) {
      const std::string what = "spans of " + std::to_string(span) + " chunks, " + std::to_string(pairs) +
                               " row pairs, activations over 512 KiB";
      Report(what, kChunks, [&] { Spans<false>(a, 512, w, span, sums.data(), pairs, kChunks); });
      Report(what + ", overlapped", kChunks, [&] { Spans<true>(a, 512, w, span, sums.data(), pairs, kChunks); });
    }
  }
  ReleaseTiles();
  return 0;
}

}  // namespace
}  // namespace strata::kernels::cpu

int main() { return strata::kernels::cpu::Main(); }
