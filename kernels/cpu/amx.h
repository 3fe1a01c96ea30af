// Intel AMX (Advanced Matrix Extensions) on Linux: whether tiles can run in
// this process, and the one tile configuration every tile kernel uses.
//
// Running tiles takes two things: the CPU must report AMX-TILE and
// AMX-BF16 (cpuid leaf 7), and the kernel must grant this process the tile
// data state (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)); without
// the grant the first tile instruction is killed with SIGILL. The grant is
// process-wide (threads started before it may use tiles too), so it is
// requested once. The tile configuration (LDTILECFG) is per thread and is
// loaded by each kernel call on the thread that runs it, so any pool
// worker can run tile kernels.
#ifndef STRATA_KERNELS_CPU_AMX_H_
#define STRATA_KERNELS_CPU_AMX_H_

#include "absl/status/status.h"

namespace strata::kernels::cpu {

// OK when tile kernels can run here; otherwise FAILED_PRECONDITION saying
// why (no AMX-BF16 in cpuid, or the kernel refused the tile state, with
// its errno). The first call requests the permission; later calls return
// the same answer. Thread-safe.
absl::Status AmxStatus();

// Loads the configuration of the tile kernels on the calling thread: all
// eight tiles 16 rows x 64 bytes (16 x 32 bf16 operands, 16 x 16 f32 sums).
// Requires AmxStatus().ok(). Loading it zeroes every tile.
void ConfigureTiles();

// Gives the tile state back on the calling thread (TILERELEASE), so
// context switches stop saving 8 KiB of tile data for it.
void ReleaseTiles();

// Tile instructions for functions built with target("amx-tile,amx-bf16").
// Not GCC 12's intrinsics: its _tile_loadd tells the compiler it reads no
// memory (so stores to the operand may be moved past it), and its
// _tile_loadconfig that it reads 8 bytes of the 64-byte configuration (the
// stores of the rest were deleted: SIGILL on the first tile instruction).
// These say they touch memory. t: a tile number, a literal 0-7; stride in
// bytes.
#define STRATA_TILE_LOAD(t, base, stride)                                                  \
  asm volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(static_cast<const void*>(base)),  \
               "r"(static_cast<long>(stride))                                            \
               : "memory")
// The same load with the T1 hint (the data need not stay in L1): measured,
// a stream of one operand loaded so no longer evicts the other operand
// kept in L1 (amx_matmul.cc's k spans).
#define STRATA_TILE_LOAD_T1(t, base, stride)                                               \
  asm volatile("tileloaddt1 (%0,%1,1), %%tmm" #t ::"r"(static_cast<const void*>(base)), \
               "r"(static_cast<long>(stride))                                            \
               : "memory")
#define STRATA_TILE_STORE(t, base, stride)                                                 \
  asm volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(static_cast<void*>(base)),      \
               "r"(static_cast<long>(stride))                                            \
               : "memory")
#define STRATA_TILE_ZERO(t) asm volatile("tilezero %%tmm" #t ::)
// tmm(dst) += tmm(a) . tmm(b): a 16 x 32 bf16, b 16 rows of 16 bf16 pairs.
#define STRATA_TILE_DPBF16(dst, a, b) asm volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #dst ::)

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_AMX_H_
