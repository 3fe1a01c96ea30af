// Matrix products for the fast CPU backend: y: [rows, n] = x: [rows, k]
// times w^T, w: [n, k] (bf16 or f32, the checkpoint layout), x and y f32.
//
// Each output y[r][j] is one accumulation in a fixed order that depends on
// the ISA only: lanes take k in steps of the lane count, then a fixed
// pairwise tree adds the lanes. How rows and outputs are blocked, how many
// rows share the step and which thread runs them never change a bit, which
// is what makes a sequence's logits independent of its batch mates.
//
// The weights stream once per call for the whole batch: an outer loop over
// blocks of 4 weight rows, an inner loop over blocks of activation rows.
// Weights are packed at load time so each 4-row block is one sequential
// stream: for block b, chunk c of 32 columns, row j of the block, the 32
// values sit at ((b * chunks + c) * 4 + j) * 32 (zero-padded past n and k).
#ifndef STRATA_KERNELS_CPU_MATMUL_H_
#define STRATA_KERNELS_CPU_MATMUL_H_

#include <cstdint>

#include "kernels/cpu/isa.h"

namespace strata::kernels::cpu {

constexpr int64_t kPackRows = 4;
constexpr int64_t kPackCols = 32;

// Elements of the packed form of an [n, k] matrix.
int64_t PackedSize(int64_t n, int64_t k);
// Packs row-major w: [n, k] (T is uint16_t for bf16 or float).
template <typename T>
void PackWeights(const T* w, int64_t n, int64_t k, T* packed);
// Index of element (row, col) in the packed form.
inline int64_t PackedIndex(int64_t row, int64_t col, int64_t k) {
  const int64_t chunks = (k + kPackCols - 1) / kPackCols;
  return (((row / kPackRows) * chunks + col / kPackCols) * kPackRows + row % kPackRows) * kPackCols +
         col % kPackCols;
}

struct MatMulArgs {
  const float* x = nullptr;     // [rows, k]
  const uint16_t* xb = nullptr; // bf16 copy of x; needed by kAvx512Bf16 (and its twin), and
                                // by kAmx in the tile layout of amx_matmul.h
  int64_t rows = 0;
  int64_t k = 0;
  const uint16_t* w_bf16 = nullptr;  // packed [n, k] (kAmx: AMX packed, amx_matmul.h), or
  const float* w_f32 = nullptr;      // packed [n, k]
  int64_t n = 0;                     // y's row stride
  float* y = nullptr;                // [rows, n]
};

// Computes outputs [n_begin, n_end) of every row with `isa`'s kernel;
// n_begin must be a multiple of kPackRows.
// kAvx512Bf16 and kAmx apply to bf16 weights; f32 weights use the AVX-512F
// kernel. kAmx runs on tiles (amx_matmul.h) for every row count, one row
// included, so its sums never depend on the batch.
void MatMulRange(Isa isa, const MatMulArgs& a, int64_t n_begin, int64_t n_end);

// The same function in plain C++, operation for operation (for tests, and
// where the ISA is missing).
void MatMulRangeTwin(Isa isa, const MatMulArgs& a, int64_t n_begin, int64_t n_end);

// Rounds x to bf16 (nearest even), as kAvx512Bf16 needs.
void ToBf16(const float* x, int64_t n, uint16_t* out);

// The ISA a product actually uses for these weights (kAmx and kAvx512Bf16
// fall back to kAvx512 for f32 weights).
Isa EffectiveIsa(Isa isa, bool bf16_weights);

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_MATMUL_H_
