// Matrix products on AMX tiles (TDPBF16PS): y: [rows, n] = x: [rows, k]
// times w^T, w: [n, k] in bf16, x converted to bf16 once per product, y f32.
//
// Weights are packed at load time in the layout the B operand of
// TDPBF16PS reads: a tile is 16 output rows x 32 k as 16 rows (k pairs) of
// 16 x 2 bf16. Outputs are grouped by 32 (2 tiles); for group g and k chunk
// c the 2 tiles sit together, tile t of (g, c) at ((g * chunks + c) * 2 + t)
// * 512 elements, so a group of 32 outputs is one sequential stream over k
// (zero-padded past n and k). Groups of 64 (4 tiles per chunk) read 2 KiB
// of every 4 KiB in each pass of a 2 x 2 block, which the L2 streamer
// (it stays within 4 KiB) followed badly: docs/benchmarks.md.
//
// Activations live in a bf16 copy laid out as tiles too: rows padded to
// a multiple of 16 with zero rows, k to a multiple of 32 with zeros, and
// the 16 x 32 tile of row tile r, chunk c at (r * chunks + c) * 512
// elements, row i of it at + 32 i. Tile loads then read 1 KiB in one
// piece: with row-major rows, a tile's 16 rows sat k * 2 bytes apart (4
// KiB for k = 2048), all in one L1 set, and the products ran at a third
// of the tile peak from cache. Every tile is 16 x 32 whatever the batch: a
// TDPBF16PS costs the same with 1 row or 16, so padding costs loads only.
//
// Summation order (measured on Sapphire Rapids, bit for bit on normal and
// subnormal data; the twin below is that model): per 32-k chunk, the even
// products (k = 0, 2, ..., 30) are added in k order into one f32 sum and
// the odd ones into another, each add rounded to nearest even with
// subnormal results flushed to zero; the chunk adds (even + odd) to the
// output, then the output adds the chunk's sum, both rounded and flushed.
// bf16 inputs that are subnormal read as zero. Each output's order depends
// on k alone, never on the rows beside it, the blocking or the thread, so
// a sequence's logits are the same alone or in any batch.
#ifndef STRATA_KERNELS_CPU_AMX_MATMUL_H_
#define STRATA_KERNELS_CPU_AMX_MATMUL_H_

#include <cstdint>

namespace strata::kernels::cpu {

struct MatMulArgs;

constexpr int64_t kAmxTileRows = 16;   // rows of an activation tile, outputs of a weight tile
constexpr int64_t kAmxChunk = 32;      // k per tile
constexpr int64_t kAmxGroup = 32;      // outputs per packed group
constexpr int64_t kAmxGroupTiles = kAmxGroup / kAmxTileRows;

// Elements of the AMX packed form of an [n, k] bf16 matrix.
int64_t AmxPackedSize(int64_t n, int64_t k);
// Index of element (row, col) of w in the packed form.
inline int64_t AmxPackedIndex(int64_t row, int64_t col, int64_t k) {
  const int64_t chunks = (k + kAmxChunk - 1) / kAmxChunk;
  const int64_t tile =
      ((row / kAmxGroup) * chunks + col / kAmxChunk) * kAmxGroupTiles + (row % kAmxGroup) / kAmxTileRows;
  return tile * 512 + ((col % kAmxChunk) / 2) * 32 + (row % kAmxTileRows) * 2 + col % 2;
}
// Packs row-major bf16 w: [n, k].
void PackWeightsAmx(const uint16_t* w, int64_t n, int64_t k, uint16_t* packed);

// k and rows rounded up to whole tiles; the activation copy holds
// AmxActRows(rows) * AmxActCols(k) elements.
inline int64_t AmxActCols(int64_t k) { return (k + kAmxChunk - 1) / kAmxChunk * kAmxChunk; }
inline int64_t AmxActRows(int64_t rows) { return (rows + kAmxTileRows - 1) / kAmxTileRows * kAmxTileRows; }
// Index of element (row, col) of x in that copy.
inline int64_t AmxActIndex(int64_t row, int64_t col, int64_t k) {
  const int64_t chunks = AmxActCols(k) / kAmxChunk;
  return ((row / kAmxTileRows) * chunks + col / kAmxChunk) * 512 + (row % kAmxTileRows) * kAmxChunk +
         col % kAmxChunk;
}
// Writes x: [rows, k] f32 as that copy, rounding to nearest even
// (subnormals may read as zero: the tiles ignore them).
void ToBf16Tiles(const float* x, int64_t rows, int64_t k, uint16_t* out);
// The same for row tiles [tile_begin, tile_end) only (their padding rows
// and columns included), so threads can share the conversion.
void ToBf16TileRows(const float* x, int64_t rows, int64_t k, int64_t tile_begin, int64_t tile_end, uint16_t* out);

// Outputs [n_begin, n_end) of every row on tiles; any range. a.xb is the
// tile copy above, a.w_bf16 the AMX packed weights. Requires AmxStatus().ok().
void AmxMatMulRange(const MatMulArgs& a, int64_t n_begin, int64_t n_end);
// The same function in plain C++, bit for bit (the model above).
void AmxMatMulRangeTwin(const MatMulArgs& a, int64_t n_begin, int64_t n_end);

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_AMX_MATMUL_H_
