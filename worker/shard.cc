#include "worker/shard.h"

#include "absl/strings/str_cat.h"

namespace strata::worker {

absl::Status ValidateTp(const model::LlamaConfig& c, int tp_rank, int tp_size) {
  if (tp_size < 1) return absl::InvalidArgumentError(absl::StrCat("tp_size must be >= 1, got ", tp_size));
  if (tp_rank < 0 || tp_rank >= tp_size) {
    return absl::InvalidArgumentError(absl::StrCat("tp_rank ", tp_rank, " is outside [0, ", tp_size, ")"));
  }
  auto divides = [&](int64_t n, const char* what) -> absl::Status {
    if (n % tp_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tp_size ", tp_size, " does not divide the ", what,
                                                     " (", n, "); pick a tp_size that divides ", n));
    }
    return absl::OkStatus();
  };
  if (auto s = divides(c.num_kv_heads, "number of KV heads"); !s.ok()) return s;
  if (auto s = divides(c.num_heads, "number of query heads"); !s.ok()) return s;
  if (auto s = divides(c.intermediate_size, "FFN width (intermediate_size)"); !s.ok()) return s;
  return divides(c.vocab_size, "vocabulary size");
}

TpDims DimsForRank(const model::LlamaConfig& c, int tp_rank, int tp_size) {
  TpDims d;
  d.num_heads = c.num_heads / tp_size;
  d.num_kv_heads = c.num_kv_heads / tp_size;
  d.intermediate = c.intermediate_size / tp_size;
  d.vocab = c.vocab_size / tp_size;
  d.vocab_begin = d.vocab * tp_rank;
  return d;
}

kernels::WeightSlice SliceFor(TensorRole role, int64_t rows, int64_t cols, int tp_rank, int tp_size) {
  kernels::WeightSlice s;  // whole
  switch (role) {
    case TensorRole::kNorm:
      break;
    case TensorRole::kColumnParallel:
    case TensorRole::kVocabParallel:
      s.row_begin = rows / tp_size * tp_rank;
      s.row_end = rows / tp_size * (tp_rank + 1);
      break;
    case TensorRole::kRowParallel:
      s.col_begin = cols / tp_size * tp_rank;
      s.col_end = cols / tp_size * (tp_rank + 1);
      break;
  }
  return s;
}

}  // namespace strata::worker
