#include "kernels/cpu/huge_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace strata::kernels::cpu {

namespace {
constexpr int64_t kHuge = int64_t{2} << 20;
}  // namespace

void* AllocateHugePages(int64_t bytes, int64_t* mapped) {
  *mapped = 0;
  if (bytes < 0 || bytes > std::numeric_limits<int64_t>::max() - 2 * kHuge) return nullptr;
  const int64_t size = std::max<int64_t>(kHuge, (bytes + kHuge - 1) / kHuge * kHuge);
  // One huge page of slack so the array can start on a 2 MiB boundary;
  // the slack is unmapped again.
  void* raw = mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (base + kHuge - 1) / kHuge * kHuge;
  const uintptr_t head = start - base;
  if (head > 0) munmap(raw, head);
  if (kHuge - head > 0) munmap(reinterpret_cast<void*>(start + size), kHuge - head);
  void* p = reinterpret_cast<void*>(start);
  madvise(p, size, MADV_HUGEPAGE);  // a hint: ordinary pages where refused
  *mapped = size;
  return p;
}

void FreeHugePages(void* p, int64_t mapped) {
  if (p != nullptr && mapped > 0) munmap(p, mapped);
}

}  // namespace strata::kernels::cpu
