#include "kernels/step_layout.h"

#include "absl/strings/str_cat.h"

namespace strata::kernels {

int64_t StepLayout::NumRows() const {
  int64_t n = 0;
  for (const SequenceChunk& s : sequences) n += s.num_tokens;
  return n;
}

std::vector<int64_t> StepLayout::FirstRows() const {
  std::vector<int64_t> first;
  int64_t row = 0;
  for (const SequenceChunk& s : sequences) {
    first.push_back(row);
    row += s.num_tokens;
  }
  return first;
}

absl::Status ValidateKvCacheShape(const KvCacheShape& shape) {
  if (shape.num_layers <= 0 || shape.num_blocks <= 0 || shape.block_size <= 0 || shape.num_kv_heads <= 0 ||
      shape.head_dim <= 0) {
    return absl::InvalidArgumentError("KV cache dimensions must be positive");
  }
  return absl::OkStatus();
}

absl::Status ValidateStepLayout(const StepLayout& layout, const KvCacheShape& cache,
                                int64_t max_positions) {
  if (layout.sequences.empty()) return absl::InvalidArgumentError("step has no sequences");
  for (size_t i = 0; i < layout.sequences.size(); ++i) {
    const SequenceChunk& s = layout.sequences[i];
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat("step sequence ", i, ": ", what));
    };
    if (s.num_tokens <= 0) return bad(absl::StrCat("num_tokens must be positive, got ", s.num_tokens));
    if (s.cached_tokens < 0) return bad(absl::StrCat("cached_tokens is negative: ", s.cached_tokens));
    if (s.position_offset < 0) return bad("position_offset is negative");
    const int64_t total = static_cast<int64_t>(s.cached_tokens) + s.num_tokens;
    if (total + s.position_offset > max_positions) {
      return bad(absl::StrCat("last position ", total + s.position_offset - 1,
                              " is beyond the model's context of ", max_positions));
    }
    const int64_t blocks_needed = (total + cache.block_size - 1) / cache.block_size;
    if (static_cast<int64_t>(s.block_table.size()) < blocks_needed) {
      return bad(absl::StrCat("block_table has ", s.block_table.size(), " blocks but ", total,
                              " tokens need ", blocks_needed));
    }
    for (int64_t b = 0; b < blocks_needed; ++b) {
      if (s.block_table[b] < 0 || s.block_table[b] >= cache.num_blocks) {
        return bad(absl::StrCat("block_table[", b, "] = ", s.block_table[b], " is outside [0, ",
                                cache.num_blocks, ")"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace strata::kernels
