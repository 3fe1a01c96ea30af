// Per-thread scratch memory for the tile kernels: grow-only, 64-byte
// aligned buffers, one per slot, owned by the calling thread and freed
// when it exits. A kernel asks for its slots at the start of a call and
// must not keep the pointers past it (the next call on the thread may
// grow, i.e. move, them). Each user names its own slots below, so two
// kernels never share a buffer.
#ifndef STRATA_KERNELS_CPU_SCRATCH_H_
#define STRATA_KERNELS_CPU_SCRATCH_H_

#include <cstdint>

namespace strata::kernels::cpu {

enum ScratchSlot : int {
  kScratchMatMulSums = 0,  // amx_matmul: a super block's partial sums between k blocks
  kScratchMatMulSpans,     // amx_matmul: one tile pair's sums between k spans
  kScratchAttnKeys,        // amx_attention: gathered K rows
  kScratchAttnValues,      // V as key pairs
  kScratchAttnQuery,       // Q as k pairs
  kScratchAttnScores,      // S^T
  kScratchAttnProbs,       // P in bf16
  kScratchAttnOut,         // one block's output
  kScratchSlots,
};

// At least `bytes` bytes of the calling thread's buffer for `slot`.
void* ThreadScratch(ScratchSlot slot, int64_t bytes);

template <typename T>
T* ThreadScratchOf(ScratchSlot slot, int64_t elements) {
  return static_cast<T*>(ThreadScratch(slot, elements * static_cast<int64_t>(sizeof(T))));
}

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_SCRATCH_H_
