// A worker's place in the world: which pipeline stage it is, which tensor-
// parallel rank of that stage, which layers it holds, and whether it owns
// the embedding (stage 0) and the lm_head (the last stage). Computed once
// (TensorRT-LLM's WorldConfig habit) and used by the worker, the router's
// plan checks and `strata up`, so no one re-derives the arithmetic.
#ifndef STRATA_MODEL_STAGE_PLACE_H_
#define STRATA_MODEL_STAGE_PLACE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::model {

// Limits on what a place may say (values arrive from flags and peers).
inline constexpr int32_t kMaxStages = 1024;
inline constexpr int32_t kMaxTpSize = 64;

// Stage boundaries are counted in half layers: half 2l is layer l's
// attention block (input norm, q/k/v, RoPE, attention, o and its residual
// add) and half 2l + 1 its MLP block (post norm, SwiGLU MLP and its
// residual add). A boundary at an odd half falls inside layer l, after its
// attention: the stage before holds the layer's attention and its KV
// cache, the stage after its MLP, and what passes between them is the
// residual stream, as at a layer's end. Written "9.5" (layer 9's middle).
std::string HalfLayerString(int64_t half);
// A movable boundary's other place (worker --movable-boundaries): across
// the MLP block beside it, so 2l + 1 (after layer l's attention) <-> 2l + 2
// (layer l's end). The two stages beside the boundary both hold that MLP.
inline int64_t ShiftedHalf(int64_t half) { return half % 2 == 1 ? half + 1 : half - 1; }
// "N" or "N.5" with N >= 0 -> 2N or 2N + 1; INVALID_ARGUMENT otherwise.
absl::StatusOr<int64_t> ParseHalfLayer(const std::string& text);

class StagePlace {
 public:
  // `first_layer`/`last_layer` < 0: the even split of `num_layers` over
  // `num_stages`. INVALID_ARGUMENT naming the field for anything out of
  // range: stage or rank outside its count, more stages than layers, a
  // layer range that is empty or leaves [0, num_layers), stage 0 not
  // starting at layer 0 or the last stage not ending at num_layers.
  static absl::StatusOr<StagePlace> Create(int32_t stage, int32_t num_stages, int32_t tp_rank, int32_t tp_size,
                                           int64_t num_layers, int64_t first_layer = -1, int64_t last_layer = -1);
  // The same with the range in half layers, [begin_half, end_half) of
  // [0, 2 * num_layers) (< 0: the even split of whole layers).
  static absl::StatusOr<StagePlace> CreateHalves(int32_t stage, int32_t num_stages, int32_t tp_rank, int32_t tp_size,
                                                 int64_t num_layers, int64_t begin_half, int64_t end_half);

  // Layers [first, last) of stage `stage` when `num_layers` split evenly.
  static std::pair<int64_t, int64_t> EvenSplit(int64_t num_layers, int32_t stage, int32_t num_stages);
  // Layer counts per stage (each at least one) that make the costliest
  // stage as cheap as it can be when every layer costs `layer_cost` and the
  // last stage also carries `last_extra` (the lm_head): a pipeline runs at
  // its slowest stage's pace. Ties go to the earlier stage. Needs
  // 1 <= num_stages <= num_layers.
  static std::vector<int64_t> BalancedSplit(int64_t num_layers, int32_t num_stages, double layer_cost,
                                            double last_extra);

  int32_t stage() const { return stage_; }
  int32_t num_stages() const { return num_stages_; }
  int32_t tp_rank() const { return tp_rank_; }
  int32_t tp_size() const { return tp_size_; }
  // The layers the stage touches, [first, last), whole or in part.
  int64_t first_layer() const { return begin_half_ / 2; }
  int64_t last_layer() const { return (end_half_ + 1) / 2; }
  int64_t begin_half() const { return begin_half_; }
  int64_t end_half() const { return end_half_; }
  // first_layer()'s attention belongs to the stage before.
  bool starts_at_mlp() const { return begin_half_ % 2 == 1; }
  // last_layer() - 1's MLP belongs to the stage after.
  bool ends_after_attention() const { return end_half_ % 2 == 1; }
  int64_t num_layers() const { return num_layers_; }  // of the whole model
  bool has_embedding() const { return stage_ == 0; }
  bool has_lm_head() const { return stage_ + 1 == num_stages_; }
  // Rank 0 of a stage speaks for it (results, errors, the rendezvous store).
  bool is_stage_leader() const { return tp_rank_ == 0; }
  // Global rank in a pipeline of num_stages x tp_size workers.
  int32_t rank() const { return stage_ * tp_size_ + tp_rank_; }

  // "stage 1 rank 0 (layers [4, 8))" ("[9.5, 16)" from a layer's middle),
  // for logs and errors.
  std::string Describe() const;

  // Whether `next` can follow this place in the same pipeline: the same
  // stage count, TP size and model, the next stage, starting at this
  // stage's last layer. INVALID_ARGUMENT saying which part differs.
  absl::Status CheckFollowedBy(const StagePlace& next) const;
  // Whether `peer` is another rank of this stage: the same layers and sizes.
  absl::Status CheckSameStage(const StagePlace& peer) const;

 private:
  StagePlace() = default;
  int32_t stage_ = 0, num_stages_ = 1, tp_rank_ = 0, tp_size_ = 1;
  int64_t begin_half_ = 0, end_half_ = 0, num_layers_ = 0;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_STAGE_PLACE_H_
