#include "model/stage_place.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace strata::model {
namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

}  // namespace

std::string HalfLayerString(int64_t half) { return absl::StrCat(half / 2, half % 2 == 1 ? ".5" : ""); }

absl::StatusOr<int64_t> ParseHalfLayer(const std::string& text) {
  std::string whole = text;
  int64_t extra = 0;
  if (whole.size() > 2 && whole.compare(whole.size() - 2, 2, ".5") == 0) {
    whole.resize(whole.size() - 2);
    extra = 1;
  }
  int64_t n = 0;
  if (whole.empty() || whole.find_first_not_of("0123456789") != std::string::npos || !absl::SimpleAtoi(whole, &n) ||
      n > (int64_t{1} << 40)) {
    return Invalid(absl::StrCat("\"", text, "\" is not a layer boundary (N, or N.5 for after layer N's attention)"));
  }
  return 2 * n + extra;
}

std::pair<int64_t, int64_t> StagePlace::EvenSplit(int64_t num_layers, int32_t stage, int32_t num_stages) {
  return {num_layers * stage / num_stages, num_layers * (stage + 1) / num_stages};
}

std::vector<int64_t> StagePlace::BalancedSplit(int64_t num_layers, int32_t num_stages, double layer_cost,
                                               double last_extra) {
  std::vector<int64_t> n(static_cast<size_t>(num_stages), 1);
  auto cost = [&](int32_t s, int64_t layers) { return layers * layer_cost + (s + 1 == num_stages ? last_extra : 0); };
  // Identical layers, each to the stage cheapest with it: the smallest maximum.
  for (int64_t left = num_layers - num_stages; left > 0; --left) {
    int32_t best = 0;
    for (int32_t s = 1; s < num_stages; ++s) {
      if (cost(s, n[s] + 1) < cost(best, n[best] + 1)) best = s;
    }
    ++n[best];
  }
  return n;
}

absl::StatusOr<StagePlace> StagePlace::Create(int32_t stage, int32_t num_stages, int32_t tp_rank, int32_t tp_size,
                                              int64_t num_layers, int64_t first_layer, int64_t last_layer) {
  return CreateHalves(stage, num_stages, tp_rank, tp_size, num_layers, first_layer < 0 ? -1 : 2 * first_layer,
                      last_layer < 0 ? -1 : 2 * last_layer);
}

absl::StatusOr<StagePlace> StagePlace::CreateHalves(int32_t stage, int32_t num_stages, int32_t tp_rank,
                                                    int32_t tp_size, int64_t num_layers, int64_t begin_half,
                                                    int64_t end_half) {
  if (num_stages < 1 || num_stages > kMaxStages) {
    return Invalid(absl::StrCat("num_stages ", num_stages, " is outside [1, ", kMaxStages, "]"));
  }
  if (stage < 0 || stage >= num_stages) {
    return Invalid(absl::StrCat("stage ", stage, " is outside [0, ", num_stages, ")"));
  }
  if (tp_size < 1 || tp_size > kMaxTpSize) {
    return Invalid(absl::StrCat("tp_size ", tp_size, " is outside [1, ", kMaxTpSize, "]"));
  }
  if (tp_rank < 0 || tp_rank >= tp_size) {
    return Invalid(absl::StrCat("tp_rank ", tp_rank, " is outside [0, ", tp_size, ")"));
  }
  if (num_layers < 1) return Invalid(absl::StrCat("num_layers ", num_layers, " must be positive"));
  if (num_stages > num_layers) {
    return Invalid(absl::StrCat("num_stages ", num_stages, " is more than the model's ", num_layers, " layers"));
  }
  StagePlace p;
  p.stage_ = stage;
  p.num_stages_ = num_stages;
  p.tp_rank_ = tp_rank;
  p.tp_size_ = tp_size;
  p.num_layers_ = num_layers;
  const auto even = EvenSplit(num_layers, stage, num_stages);
  p.begin_half_ = begin_half >= 0 ? begin_half : 2 * even.first;
  p.end_half_ = end_half >= 0 ? end_half : 2 * even.second;
  if (p.begin_half_ >= p.end_half_ || p.end_half_ > 2 * num_layers) {
    return Invalid(absl::StrCat("layers [", HalfLayerString(p.begin_half_), ", ", HalfLayerString(p.end_half_),
                                ") are not a non-empty range inside [0, ", num_layers, ")"));
  }
  if (stage == 0 && p.begin_half_ != 0) {
    return Invalid(absl::StrCat("stage 0 must start at layer 0, not ", HalfLayerString(p.begin_half_)));
  }
  if (p.has_lm_head() && p.end_half_ != 2 * num_layers) {
    return Invalid(
        absl::StrCat("the last stage must end at layer ", num_layers, ", not ", HalfLayerString(p.end_half_)));
  }
  return p;
}

std::string StagePlace::Describe() const {
  return absl::StrCat("stage ", stage_, " rank ", tp_rank_, " (layers [", HalfLayerString(begin_half_), ", ",
                      HalfLayerString(end_half_), "))");
}

absl::Status StagePlace::CheckSameStage(const StagePlace& peer) const {
  if (peer.stage_ != stage_ || peer.num_stages_ != num_stages_ || peer.tp_size_ != tp_size_ ||
      peer.num_layers_ != num_layers_) {
    return Invalid(absl::StrCat(peer.Describe(), " is not a rank of ", Describe()));
  }
  if (peer.begin_half_ != begin_half_ || peer.end_half_ != end_half_) {
    return Invalid(absl::StrCat("stage ", stage_, " rank ", peer.tp_rank_, " holds layers [",
                                HalfLayerString(peer.begin_half_), ", ", HalfLayerString(peer.end_half_), "); rank ",
                                tp_rank_, " says [", HalfLayerString(begin_half_), ", ", HalfLayerString(end_half_),
                                ")"));
  }
  return absl::OkStatus();
}

absl::Status StagePlace::CheckFollowedBy(const StagePlace& next) const {
  if (next.num_stages_ != num_stages_ || next.tp_size_ != tp_size_ || next.num_layers_ != num_layers_ ||
      next.stage_ != stage_ + 1) {
    return Invalid(absl::StrCat(next.Describe(), " cannot follow ", Describe()));
  }
  if (next.begin_half_ != end_half_) {
    return Invalid(absl::StrCat("stage ", stage_, " ends at layer ", HalfLayerString(end_half_), " but stage ",
                                next.stage_, " starts at ", HalfLayerString(next.begin_half_),
                                ": the plan must cover each layer once"));
  }
  return absl::OkStatus();
}

}  // namespace strata::model
