// Zero-initialised memory in transparent huge pages, for what a step
// streams end to end (packed weights) and for the read-bandwidth ceiling
// measured against it. A decode step walks every weight once; with 4 KiB
// pages that is a TLB miss every 4 KiB of the stream, and at batch 16 on
// the 1b preset the products ran about 30% slower for it
// (docs/benchmarks.md). Where the kernel gives no huge pages (THP "never"),
// the memory is ordinary pages and everything still works.
#ifndef STRATA_KERNELS_CPU_HUGE_PAGES_H_
#define STRATA_KERNELS_CPU_HUGE_PAGES_H_

#include <cstdint>
#include <limits>

namespace strata::kernels::cpu {

// Maps at least `bytes` zeroed bytes starting on a 2 MiB boundary and asks
// for huge pages; nullptr when the memory is not there. *mapped receives
// the size to pass to FreeHugePages.
void* AllocateHugePages(int64_t bytes, int64_t* mapped);
void FreeHugePages(void* p, int64_t mapped);

// An array of T in such memory, allocated once.
template <typename T>
class HugePageArray {
 public:
  HugePageArray() = default;
  ~HugePageArray() { FreeHugePages(data_, mapped_); }
  HugePageArray(const HugePageArray&) = delete;
  HugePageArray& operator=(const HugePageArray&) = delete;

  // Allocates n zeroed elements; false when out of memory.
  bool Allocate(int64_t n) {
    FreeHugePages(data_, mapped_);
    data_ = nullptr;
    mapped_ = 0;
    size_ = 0;
    if (n < 0 || n > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(sizeof(T))) return false;
    data_ = static_cast<T*>(AllocateHugePages(n * static_cast<int64_t>(sizeof(T)), &mapped_));
    size_ = data_ != nullptr ? n : 0;
    return data_ != nullptr;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  T& operator[](int64_t i) { return data_[i]; }
  const T& operator[](int64_t i) const { return data_[i]; }
  int64_t size() const { return size_; }

 private:
  T* data_ = nullptr;
  int64_t size_ = 0;
  int64_t mapped_ = 0;
};

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_HUGE_PAGES_H_
