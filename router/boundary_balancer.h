// Where a pipeline's movable boundaries go, step by step. Each boundary
// between two stages can sit on either side of the MLP block beside it
// (worker --movable-boundaries; StepPlan::shift_boundaries moves every one
// of them at once). Which side is better depends on the step: a prefill
// chunk of many rows and few samples loads the first stages, a decode step
// whose every row samples loads the last one with the lm_head. A pipeline
// runs at its busiest stage's pace, so each step goes where the busiest
// stage is predicted to be least busy.
//
// Each stage's busy time (compute and all-reduce, as the StepResult's
// timings report it) is fitted online by least squares over the step's
// shape: 1, rows, sampled rows, attention work, and the shift and the shift
// times the rows (the moved MLP's fixed and per-row cost, one sign on the
// stage that gives it and the other on the stage that takes it). Old steps
// fade (a forgetting factor), so the fit follows the machine's load. Until
// both placements have been seen often enough the balancer alternates; then
// a step in `explore_every` takes the other placement than the fit prefers,
// so that the fit of both stays current.
//
// Not thread-safe: the pipeline driver's thread owns it.
#ifndef STRATA_ROUTER_BOUNDARY_BALANCER_H_
#define STRATA_ROUTER_BOUNDARY_BALANCER_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "transport/wire.h"

namespace strata::router {

// What a step asks of each stage.
struct StepShape {
  int64_t rows = 0;        // new tokens
  int64_t sampled = 0;     // rows whose logits the last stage computes
  double attention = 0;    // sum over sequences of new tokens x the context each attends to on average
  static StepShape Of(const transport::StepPlan& plan);
};

struct BoundaryBalancerOptions {
  double forgetting = 0.995;  // weight of a step once one more step has been recorded
  int64_t warm_up = 8;        // steps of each placement recorded before the fit decides
  int64_t explore_every = 32; // then one step in this many takes the other placement
};

class BoundaryBalancer {
 public:
  static constexpr int kFeatures = 6;

  explicit BoundaryBalancer(int32_t num_stages, const BoundaryBalancerOptions& options = {});

  // Whether the step of `shape` runs with its boundaries shifted.
  bool Choose(const StepShape& shape);
  // A step of `shape` (shifted or not) came back with `timings`, one per
  // stage it passed. Timings of stages outside [0, num_stages) are ignored.
  void Record(const StepShape& shape, bool shifted, absl::Span<const transport::StageTiming> timings);

  // The fitted busy seconds of `stage` for a step of `shape`.
  double Predict(int32_t stage, const StepShape& shape, bool shifted) const;
  // Steps recorded with the boundaries shifted and where they were placed.
  int64_t recorded(bool shifted) const { return recorded_[shifted ? 1 : 0]; }
  int64_t chosen_shifted() const { return chosen_shifted_; }
  int64_t chosen() const { return chosen_; }

 private:
  using Vec = std::array<double, kFeatures>;
  struct Fit {
    std::array<Vec, kFeatures> a{};  // the weighted normal equations, sum of w x x^T
    Vec b{};                         // sum of w x y
    Vec coef{};
  };
  static Vec Features(const StepShape& shape, bool shifted);
  static void Solve(Fit* fit);

  int32_t num_stages_;
  BoundaryBalancerOptions options_;
  std::vector<Fit> fits_;
  int64_t recorded_[2] = {0, 0};
  int64_t chosen_ = 0, chosen_shifted_ = 0;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_BOUNDARY_BALANCER_H_
