// This machine's two ceilings, measured in-process so a benchmark can report
// its results against limits taken in the same run: read bandwidth (bytes
// streamed from memory per second, several threads) and the FMA peak
// (fused multiply-adds of the widest vectors the CPU has, in FLOP/s).
#ifndef STRATA_KERNELS_CPU_ROOFLINE_H_
#define STRATA_KERNELS_CPU_ROOFLINE_H_

#include <cstdint>

namespace strata::kernels::cpu {

// Best of `repeats` passes summing a `bytes`-long buffer (far larger than
// the caches) split over `threads` threads, each pass once plainly and once
// with software prefetch 1 KiB ahead (faster on Intel). Bytes per second.
double MeasureReadBandwidth(int threads, int64_t bytes = int64_t{1} << 30, int repeats = 3);

// FLOP/s of independent vector FMA chains on `threads` threads (AVX-512
// where present, else AVX2, else scalar).
double MeasureFmaPeak(int threads);

// FLOP/s of vdpbf16ps chains (each instruction: 32 bf16 products, 64 FLOP);
// 0 where the CPU lacks AVX-512 BF16.
double MeasureBf16DotPeak(int threads);

// FLOP/s of TDPBF16PS on tiles that never leave the registers (each
// instruction: 16 x 16 outputs x 32 products, 16384 FLOP), four independent
// accumulators per thread: the AMX ceiling. 0 where AMX cannot run.
double MeasureAmxPeak(int threads);

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_ROOFLINE_H_
