// The CPU backend's storage: weights in the layout their products read,
// activation buffers and the paged KV cache. Private to the backend.
#ifndef STRATA_KERNELS_CPU_CPU_STORAGE_H_
#define STRATA_KERNELS_CPU_CPU_STORAGE_H_

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/amx_matmul.h"
#include "kernels/cpu/huge_pages.h"
#include "kernels/cpu/matmul.h"

namespace strata::kernels::cpu {

// 64-byte aligned float storage.
struct AlignedFloats {
  explicit AlignedFloats(int64_t n)
      : data(static_cast<float*>(std::aligned_alloc(64, std::max<int64_t>(64, (n * 4 + 63) / 64 * 64)))),
        size(n) {}
  ~AlignedFloats() { std::free(data); }
  float* data;
  int64_t size;
};

// Matrices (2-D tensors) are kept as in the checkpoint, bf16 or f32, in the
// packed layout of matmul.h; vectors (1-D: norm weights) as plain f32,
// converted once here rather than at every use.
class CpuWeight : public Weight {
 public:
  // amx: bf16 matrices in the tile layout of amx_matmul.h (backends on kAmx).
  CpuWeight(int64_t rows, int64_t cols, bool bf16, bool packed, bool amx)
      : Weight(rows, cols), is_bf16(bf16), packed(packed), amx(amx && bf16 && packed) {}
  // Allocates the storage; false when out of memory.
  bool Allocate() {
    const int64_t n = amx ? AmxPackedSize(rows(), cols()) : packed ? PackedSize(rows(), cols()) : rows() * cols();
    return is_bf16 ? b.Allocate(n) : f.Allocate(n);
  }
  int64_t Index(int64_t r, int64_t c) const {
    return amx ? AmxPackedIndex(r, c, cols()) : packed ? PackedIndex(r, c, cols()) : r * cols() + c;
  }
  bool is_bf16;
  bool packed;
  bool amx;
  HugePageArray<uint16_t> b;
  HugePageArray<float> f;
};

class CpuBuffer : public Buffer {
 public:
  explicit CpuBuffer(int64_t n) : mem_(n) {}
  float* data() override { return mem_.data; }
  int64_t size() const override { return mem_.size; }

 private:
  AlignedFloats mem_;
};

// Per layer K then V, [num_blocks, block_size, kv_heads, head_dim] each.
class CpuKvCache : public KvCache {
 public:
  CpuKvCache(const KvCacheShape& shape, bool bf16) : KvCache(shape), bf16_(bf16) {
    const int64_t n = 2 * shape.num_layers * shape.FloatsPerLayer();
    if (bf16) {
      b_.resize(n);
    } else {
      f_.resize(n);
    }
  }
  bool bf16() const { return bf16_; }
  uint16_t* kb(int64_t l) { return b_.data() + 2 * l * shape().FloatsPerLayer(); }
  uint16_t* vb(int64_t l) { return kb(l) + shape().FloatsPerLayer(); }
  float* kf(int64_t l) { return f_.data() + 2 * l * shape().FloatsPerLayer(); }
  float* vf(int64_t l) { return kf(l) + shape().FloatsPerLayer(); }
  const uint16_t* kb(int64_t l) const { return const_cast<CpuKvCache*>(this)->kb(l); }
  const uint16_t* vb(int64_t l) const { return const_cast<CpuKvCache*>(this)->vb(l); }
  const float* kf(int64_t l) const { return const_cast<CpuKvCache*>(this)->kf(l); }
  const float* vf(int64_t l) const { return const_cast<CpuKvCache*>(this)->vf(l); }

 private:
  bool bf16_;
  std::vector<uint16_t> b_;
  std::vector<float> f_;
};

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_CPU_STORAGE_H_
