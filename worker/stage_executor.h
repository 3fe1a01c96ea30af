// Runs one pipeline stage's layers for a step: the single-process engine is a
// stage that holds every layer, and each worker runs the same code for its
// layer range. The executor owns the stage's weights (in backend storage);
// the caller owns the KV cache and the step layout (the router's block
// tables, or the local engine's).
#ifndef STRATA_WORKER_STAGE_EXECUTOR_H_
#define STRATA_WORKER_STAGE_EXECUTOR_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "model/checkpoint.h"
#include "worker/communicator.h"
#include "worker/shard.h"

namespace strata::worker {

// Layers [first_layer, last_layer) of the model; the first stage also holds
// the embedding, the last the final norm and lm_head. A stage runs as
// tp_size ranks, each holding its Megatron slice (worker/shard.h). A stage
// may start or end inside a layer, after its attention block
// (model/stage_place.h): then it holds first_layer's MLP only, or
// last_layer - 1's attention (and its KV cache) only.
struct StageSpec {
  int64_t first_layer = 0;
  int64_t last_layer = 0;
  bool has_embedding = true;
  bool has_lm_head = true;
  int tp_rank = 0;
  int tp_size = 1;
  bool starts_at_mlp = false;
  bool ends_after_attention = false;
  // Movable boundaries (worker --movable-boundaries): the stage also holds
  // the MLP block on the far side of its first (movable_begin) or its last
  // (movable_end) boundary, so that a step may move the boundary across it
  // (StepPlan::shift_boundaries). A boundary after layer l's attention then
  // moves to layer l's end, and one at layer l's start to inside layer
  // l - 1, after its attention; the stage on the other side moves it the
  // same way. Not on the first stage's begin or the last stage's end.
  bool movable_begin = false;
  bool movable_end = false;

  // The layers whose attention (and KV cache) this stage holds.
  int64_t NumAttentionLayers() const { return last_layer - first_layer - (starts_at_mlp ? 1 : 0); }

  // The stage's half layers (model/stage_place.h), [begin, end), with its
  // boundaries where they were placed or (shifted) at their other places.
  int64_t BeginHalf(bool shifted) const;
  int64_t EndHalf(bool shifted) const;

  static StageSpec Whole(const model::LlamaConfig& c) { return {0, c.num_layers, true, true, 0, 1}; }
};

class StageExecutor {
 public:
  // Loads the stage's tensors (this rank's slices) from `checkpoint` into
  // `backend`, checking each one's shape against the config. Only the bytes
  // of the slices are read from the (mapped) checkpoint. With tp_size > 1,
  // `comm` joins the stage's ranks (rank and size must match the spec); it
  // may be null when tp_size is 1. `backend` and `comm` must outlive the
  // executor; the checkpoint may be closed afterwards.
  static absl::StatusOr<std::unique_ptr<StageExecutor>> Load(kernels::Backend* backend,
                                                             const model::Checkpoint& checkpoint,
                                                             const StageSpec& spec,
                                                             Communicator* comm = nullptr);

  const model::LlamaConfig& config() const { return config_; }
  kernels::Backend* backend() const { return backend_; }
  const StageSpec& spec() const { return spec_; }
  const TpDims& dims() const { return dims_; }
  uint64_t weight_bytes() const { return weight_bytes_; }  // checkpoint bytes of this rank's slices

  // The KV cache shape this stage (rank) needs for `num_blocks` blocks.
  kernels::KvCacheShape KvShape(int64_t num_blocks, int64_t block_size) const;
  // Bytes of one KV block in this stage's backend (its KvBytesPerValue).
  int64_t KvBytesPerBlock(int64_t block_size) const;

  // Runs one step.
  //   token_ids: [layout rows] when the stage has the embedding (else empty);
  //   hidden_in: [layout rows, hidden] host floats otherwise.
  //   logit_rows: on the last stage, the step rows whose logits to return.
  // Output: the last stage writes logits [logit_rows, vocab] (the whole
  // vocabulary, gathered from every rank) to `out`; other stages write
  // hidden states [layout rows, hidden]. Every rank of a stage must call
  // Forward with the same arguments (the collectives pair up).
  // Bad layouts, token ids or sizes are INVALID_ARGUMENT; nothing is run.
  // `hidden_out`, when not null on a stage without the lm_head, receives
  // the hidden states instead of `out` (room for [rows, hidden] floats): the
  // worker puts them straight into its outgoing message.
  // Whether the following steps run with the stage's movable boundaries at
  // their other places (StepPlan::shift_boundaries). FAILED_PRECONDITION
  // for true on a stage without one. Every rank of a stage must set the same.
  absl::Status SetBoundariesShifted(bool shifted);
  bool boundaries_shifted() const { return shifted_; }

  absl::Status Forward(const kernels::StepLayout& layout, const std::vector<int32_t>& token_ids,
                       absl::Span<const float> hidden_in, const std::vector<int64_t>& logit_rows,
                       kernels::KvCache* cache, std::vector<float>* out, float* hidden_out = nullptr);

  // Forward on the last stage that leaves the logits [logit_rows, vocab] (the
  // whole vocabulary, gathered from every rank) in backend memory, for
  // Backend::Sample: the returned pointer is valid until the next call on
  // this executor; nullptr when logit_rows is empty. The same arguments and
  // errors as Forward; FAILED_PRECONDITION on a stage without the lm_head.
  // `to` says which ranks get them, and every rank of the stage must pass
  // the same: kRankZero (the worker, whose rank 0 samples): ranks other
  // than 0 only take their part in the gather and get nullptr, and where
  // the communicator gathers to rank 0 (Communicator::
  // gathers_columns_to_root: shared memory) rank 0 receives whole rows in
  // one copy, with no all-gather and no relayout; kEveryRank: every rank
  // gets them. With tp_size 1 the logits are returned either way.
  enum class LogitsTo { kEveryRank, kRankZero };
  absl::StatusOr<const float*> ForwardLogits(const kernels::StepLayout& layout,
                                             const std::vector<int32_t>& token_ids,
                                             absl::Span<const float> hidden_in,
                                             const std::vector<int64_t>& logit_rows, kernels::KvCache* cache,
                                             LogitsTo to = LogitsTo::kEveryRank);

  // Whether a row asks only for its greedy token: it samples, at
  // temperature 0 or with top_k 1 (otherwise valid parameters), with no
  // log-probabilities and no target to score.
  static bool IsPlainGreedy(const kernels::SampleRequest& q);
  // Forward on the last stage for a step whose every logits row is a plain
  // greedy draw: results[i].token is row i's first maximum, the token
  // Backend::Sample draws for requests[i] from the whole row. With
  // tp_size > 1 the vocabulary stays split: each rank draws from its own
  // slice and the ranks all-gather one (value, id) pair per row, so no
  // logits are gathered and no rank scans whole rows; where a slice's
  // winner is NaN (or the backend gave none), rank 0 gathers the rows and
  // draws from them instead. Rank 0's results are the answer (the other
  // ranks' too on the split path). The same arguments and errors as
  // ForwardLogits; INVALID_ARGUMENT when requests or results do not match
  // logit_rows or a request is not IsPlainGreedy.
  absl::Status ForwardGreedy(const kernels::StepLayout& layout, const std::vector<int32_t>& token_ids,
                             absl::Span<const float> hidden_in, const std::vector<int64_t>& logit_rows,
                             kernels::KvCache* cache, absl::Span<const kernels::SampleRequest> requests,
                             absl::Span<kernels::SampleResult> results);

 private:
  struct Layer {
    // Null where the layer's attention or its MLP block is another stage's.
    std::unique_ptr<kernels::Weight> input_norm, q, k, v, o, post_norm, gate, up, down;
    int64_t kv_layer = -1;  // its layer in this stage's KV cache; -1 without attention
    // When the MLP runs: always, or only with the boundaries where they were
    // placed, or only shifted (a movable boundary's MLP, StageSpec).
    enum class When : uint8_t { kAlways, kUnshifted, kShifted } mlp_when = When::kAlways;
  };
  struct Scratch {
    // logits: this rank's [logit rows, vocab / tp]; with tp > 1, all_logits
    // [tp][logit rows][vocab / tp] gathered from every rank and vocab_logits
    // their interleaving into [logit rows, vocab] (or rank 0's gather
    // straight into it). Those two are allocated at first use (WholeLogits):
    // a rank that only sends its part needs neither, and a gather to rank 0
    // no all_logits (each is logit rows x vocab floats: 131 MB at 256 rows).
    std::unique_ptr<kernels::Buffer> x, norm, q, k, v, attn, proj, gate, up, act, gathered,
        gathered_norm, logits, all_logits, vocab_logits;
    // ForwardGreedy's [values][ids] of this rank's slice winners (2 x logit
    // rows) and every rank's (tp x that); allocated at first use.
    std::unique_ptr<kernels::Buffer> greedy_pairs, all_greedy_pairs;
    int64_t rows = 0;
    int64_t logit_rows = 0;
  };

  StageExecutor(kernels::Backend* backend, const model::LlamaConfig& config, const StageSpec& spec,
                Communicator* comm);
  absl::Status AllReduce(float* data, int64_t n);
  absl::Status EnsureScratch(int64_t rows, int64_t logit_rows);
  // Forward's argument checks.
  absl::Status Validate(const kernels::StepLayout& layout, const std::vector<int32_t>& token_ids,
                        absl::Span<const float> hidden_in, const std::vector<int64_t>& logit_rows,
                        const kernels::KvCache& cache) const;
  // Validates, begins the step and runs the embedding (or takes hidden_in)
  // and every layer, leaving the hidden states in scratch_.x.
  absl::Status RunLayers(const kernels::StepLayout& layout, const std::vector<int32_t>& token_ids,
                         absl::Span<const float> hidden_in, const std::vector<int64_t>& logit_rows,
                         kernels::KvCache* cache);
  absl::Status RunLayer(size_t index, int64_t rows, kernels::KvCache* cache);
  // The final norm and lm_head of `logit_rows`, gathered over the vocabulary
  // (to the ranks `to` names; ForwardLogits).
  absl::StatusOr<const float*> Logits(const std::vector<int64_t>& logit_rows, LogitsTo to);
  // This rank's part: the final norm and lm_head of `logit_rows` into
  // scratch_.logits [rows, vocab / tp].
  void LocalLogits(const std::vector<int64_t>& logit_rows);
  // scratch_.logits' n rows gathered over the vocabulary (Logits).
  absl::StatusOr<const float*> GatherLogits(int64_t n, LogitsTo to);
  // *b, allocated now for the scratch's logit rows x the whole vocabulary
  // if it is not yet.
  absl::StatusOr<float*> WholeLogits(std::unique_ptr<kernels::Buffer>* b);

  kernels::Backend* backend_;
  model::LlamaConfig config_;
  StageSpec spec_;
  Communicator* comm_;
  TpDims dims_;
  std::vector<float> inv_freq_;
  std::vector<int32_t> local_ids_;
  std::vector<int64_t> interleave_rows_;
  std::vector<int64_t> winner_rows_;  // ForwardGreedy's host scratch
  std::vector<float> winner_ids_, all_pairs_;
  std::unique_ptr<kernels::Weight> embedding_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  Scratch scratch_;
  uint64_t weight_bytes_ = 0;
  bool shifted_ = false;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_STAGE_EXECUTOR_H_
