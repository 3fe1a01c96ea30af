// Megatron-style tensor-parallel slicing of one stage's tensors: q/k/v and
// gate/up by output rows (column-parallel), o/down by input columns
// (row-parallel), the embedding and lm_head by vocabulary rows
// (vocab-parallel); norms whole on every rank. Rank r of T holds the r-th of
// T equal parts, so the concatenation of every rank's slice is the tensor.
#ifndef STRATA_WORKER_SHARD_H_
#define STRATA_WORKER_SHARD_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "model/config.h"

namespace strata::worker {

enum class TensorRole {
  kNorm,          // [dim], whole on every rank
  kColumnParallel,  // q, k, v, gate, up: rows split
  kRowParallel,     // o, down: columns split
  kVocabParallel,   // embed_tokens, lm_head: rows (vocabulary) split
};

// The dimensions one TP rank holds.
struct TpDims {
  int64_t num_heads = 0;     // query heads on this rank
  int64_t num_kv_heads = 0;  // KV heads on this rank
  int64_t intermediate = 0;  // FFN width on this rank
  int64_t vocab = 0;         // vocabulary rows on this rank
  int64_t vocab_begin = 0;   // first vocabulary id this rank owns

  int64_t q_size(int64_t head_dim) const { return num_heads * head_dim; }
  int64_t kv_size(int64_t head_dim) const { return num_kv_heads * head_dim; }
};

// INVALID_ARGUMENT unless 1 <= tp_size, 0 <= tp_rank < tp_size and tp_size
// divides the KV head count (hence the query heads), the FFN width and the
// vocabulary. The message names the dimension that does not divide.
absl::Status ValidateTp(const model::LlamaConfig& config, int tp_rank, int tp_size);

// Requires ValidateTp to pass.
TpDims DimsForRank(const model::LlamaConfig& config, int tp_rank, int tp_size);

// The slice of a tensor of `rows` x `cols` that `tp_rank` of `tp_size` holds.
kernels::WeightSlice SliceFor(TensorRole role, int64_t rows, int64_t cols, int tp_rank, int tp_size);

}  // namespace strata::worker

#endif  // STRATA_WORKER_SHARD_H_
