// What one step computes: which sequences, how many new tokens each, where
// they sit in the KV cache. The router builds it (it owns the block tables);
// every backend op of the step reads it. Rows of every activation tensor in
// a step are the new tokens of all sequences, sequence after sequence.
#ifndef STRATA_KERNELS_STEP_LAYOUT_H_
#define STRATA_KERNELS_STEP_LAYOUT_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace strata::kernels {

struct SequenceChunk {
  int32_t num_tokens = 0;      // new tokens this step (prefill chunk or 1 for decode)
  int32_t cached_tokens = 0;   // tokens of this sequence already in the KV cache
  int64_t position_offset = 0; // RoPE position of cache index i is i + position_offset
  // KV block ids holding cache indexes [0, cached_tokens + num_tokens):
  // index i lives in block_table[i / block_size], slot i % block_size.
  std::vector<int32_t> block_table;
};

struct StepLayout {
  std::vector<SequenceChunk> sequences;

  int64_t NumRows() const;
  // Row index of each sequence's first new token.
  std::vector<int64_t> FirstRows() const;
};

// Shape of a paged KV cache pool (per worker; same block count and size on
// every worker of a pipeline).
struct KvCacheShape {
  int64_t num_layers = 0;  // layers held by this stage
  int64_t num_blocks = 0;
  int64_t block_size = 0;  // tokens per block
  int64_t num_kv_heads = 0;  // KV heads on this rank
  int64_t head_dim = 0;

  int64_t FloatsPerLayer() const { return num_blocks * block_size * num_kv_heads * head_dim; }
};

// Every dimension of a KV cache pool positive (INVALID_ARGUMENT otherwise);
// each backend's AllocateKvCache starts with it.
absl::Status ValidateKvCacheShape(const KvCacheShape& shape);

// Checks a layout against a cache before any op reads it: positive token
// counts, block tables long enough and within [0, num_blocks), positions
// non-negative and below `max_positions`. Layouts arrive from the network,
// so this is input validation, not an assertion.
absl::Status ValidateStepLayout(const StepLayout& layout, const KvCacheShape& cache,
                                int64_t max_positions);

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_STEP_LAYOUT_H_
