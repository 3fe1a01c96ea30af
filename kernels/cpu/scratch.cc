#include "kernels/cpu/scratch.h"

#include <cstdlib>

namespace strata::kernels::cpu {
namespace {

struct Buffers {
  void* p[kScratchSlots] = {};
  int64_t n[kScratchSlots] = {};
  ~Buffers() {
    for (void* b : p) std::free(b);
  }
};

}  // namespace

void* ThreadScratch(ScratchSlot slot, int64_t bytes) {
  thread_local Buffers b;
  if (b.n[slot] < bytes) {
    std::free(b.p[slot]);
    b.n[slot] = (bytes + 4095) / 4096 * 4096;
    b.p[slot] = std::aligned_alloc(64, b.n[slot]);
  }
  return b.p[slot];
}

}  // namespace strata::kernels::cpu
