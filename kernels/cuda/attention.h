// GQA attention over the paged bf16 KV cache on the GPU: one kernel for
// decode and (chunked) prefill, split-KV in the flash-decoding style.
//
// Work is cut into tiles of "virtual rows": for one sequence and one KV head,
// virtual row v is (new token v / G, query head kv_head * G + v % G), where G
// is the group size (query heads per KV head). A tile holds 16 rows (decode:
// the whole group of one token, so each K/V block is read once per group)
// or 64 rows (prefill). The key range a tile sees (up to its last row's
// causal limit) may be split over several thread blocks; each writes a
// partial output and its log-sum-exp, and a combine kernel merges them.
// QK^T and PV run on tensor cores (bf16 in, f32 accumulate); the softmax is
// online, in f32.
//
// The plan is made on the host from the step layout (MakeAttentionPlan),
// copied into a caller-owned device workspace (UploadAttentionPlan), then
// launched (LaunchAttention) once per layer: after the upload every launch
// reads only device memory with fixed pointers, so a step can be captured in
// a CUDA graph.
#ifndef STRATA_KERNELS_CUDA_ATTENTION_H_
#define STRATA_KERNELS_CUDA_ATTENTION_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "kernels/step_layout.h"

namespace strata::kernels::cuda {

struct AttentionDims {
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;   // 64 or 128
  int32_t block_size = 0; // tokens per KV block
};

// Device-side records (plain ints; layouts shared by host and device).
struct AttnSeq {
  int32_t first_row;     // step row of the sequence's first new token
  int32_t num_tokens;    // new tokens
  int32_t cached_tokens; // tokens before them in the cache
  int32_t table_offset;  // into the concatenated block tables
};
struct AttnItem {
  int32_t seq;
  int32_t v_begin;       // first virtual row of the tile
  int32_t kv_begin;      // key range [kv_begin, kv_end) of this split
  int32_t kv_end;
  int32_t partial_row;   // -1: write the output directly; else partial slot
};
struct AttnCombineTile {
  int32_t seq;
  int32_t v_begin;
  int32_t rows;          // rows per partial slot (the tile size)
  int32_t num_splits;
  int32_t partial_row;   // first slot; split s uses partial_row + s * rows
};

struct AttentionPlan {
  AttentionDims dims;
  std::vector<AttnSeq> seqs;
  std::vector<int32_t> block_tables;
  std::vector<AttnItem> items16;  // tiles of 16 rows
  std::vector<AttnItem> items64;  // tiles of 64 rows
  std::vector<AttnCombineTile> combine;
  int64_t partial_rows = 0;       // partial slots' rows (times kv_heads x head_dim floats)
  int32_t combine_max_splits = 0;
  int32_t combine_max_rows = 0;
  // Host staging of the records; kept here so an asynchronous upload never
  // reads freed memory. The plan must outlive the upload.
  std::vector<char> staging;

  // Device workspace: the records above, then partial outputs and LSEs.
  int64_t WorkspaceBytes() const;
};

// Builds the plan. `target_blocks` is how many thread blocks to aim for
// (a few per SM); splitting stops at `min_split_tokens` keys per split.
// Invariants (checked by the caller with ValidateStepLayout): q_heads %
// kv_heads == 0, block tables cover every sequence's keys.
AttentionPlan MakeAttentionPlan(const StepLayout& layout, const AttentionDims& dims,
                                int target_blocks, int min_split_tokens = 128);

// Copies the plan's records into `workspace` (device, WorkspaceBytes() long).
cudaError_t UploadAttentionPlan(AttentionPlan& plan, void* workspace, cudaStream_t stream);

// q, out: device f32 [step rows, q_heads, head_dim]; k_cache, v_cache: device
// bf16 [num_blocks, block_size, kv_heads, head_dim] of one layer.
cudaError_t LaunchAttention(const AttentionPlan& plan, const void* workspace, const float* q,
                            const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache,
                            float* out, cudaStream_t stream);

}  // namespace strata::kernels::cuda

#endif  // STRATA_KERNELS_CUDA_ATTENTION_H_
