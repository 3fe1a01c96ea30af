#include "router/boundary_balancer.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace strata::router {

StepShape StepShape::Of(const transport::StepPlan& plan) {
  StepShape shape;
  for (const transport::PlanSequence& s : plan.sequences) {
    shape.rows += s.num_tokens;
    shape.sampled += s.prompt_logprobs ? s.num_tokens : (s.sample ? 1 : 0);
    shape.attention += static_cast<double>(s.num_tokens) * (s.cached_tokens + (s.num_tokens + 1) / 2.0);
  }
  return shape;
}

BoundaryBalancer::BoundaryBalancer(int32_t num_stages, const BoundaryBalancerOptions& options)
    : num_stages_(std::max<int32_t>(num_stages, 1)), options_(options), fits_(num_stages_) {}

// Scaled so that a typical step's features are near 1 (a 256-row chunk, a
// 256-token context), which keeps the normal equations well conditioned.
BoundaryBalancer::Vec BoundaryBalancer::Features(const StepShape& shape, bool shifted) {
  const double rows = static_cast<double>(shape.rows) / 256.0;
  const double s = shifted ? 1.0 : 0.0;
  return {1.0, rows, static_cast<double>(shape.sampled) / 256.0, shape.attention / 65536.0, s, s * rows};
}

// coef = (A + ridge I)^-1 b by Gaussian elimination with partial pivoting;
// the small ridge keeps a feature that has not varied yet at 0.
void BoundaryBalancer::Solve(Fit* fit) {
  std::array<Vec, kFeatures> a = fit->a;
  Vec b = fit->b;
  const double ridge = 1e-6 * (1.0 + a[0][0]);
  for (int i = 0; i < kFeatures; ++i) a[i][i] += ridge;
  for (int col = 0; col < kFeatures; ++col) {
    int pivot = col;
    for (int r = col + 1; r < kFeatures; ++r) {
      if (std::fabs(a[r][col]) > std::fabs(a[pivot][col])) pivot = r;
    }
    if (std::fabs(a[pivot][col]) < 1e-300) return;  // keep the previous fit
    std::swap(a[col], a[pivot]);
    std::swap(b[col], b[pivot]);
    for (int r = col + 1; r < kFeatures; ++r) {
      const double f = a[r][col] / a[col][col];
      for (int c = col; c < kFeatures; ++c) a[r][c] -= f * a[col][c];
      b[r] -= f * b[col];
    }
  }
  Vec coef{};
  for (int r = kFeatures - 1; r >= 0; --r) {
    double v = b[r];
    for (int c = r + 1; c < kFeatures; ++c) v -= a[r][c] * coef[c];
    coef[r] = v / a[r][r];
  }
  for (double c : coef) {
    if (!std::isfinite(c)) return;
  }
  fit->coef = coef;
}

double BoundaryBalancer::Predict(int32_t stage, const StepShape& shape, bool shifted) const {
  if (stage < 0 || stage >= num_stages_) return 0;
  const Vec x = Features(shape, shifted);
  double ms = 0;
  for (int i = 0; i < kFeatures; ++i) ms += fits_[stage].coef[i] * x[i];
  return ms / 1e3;
}

bool BoundaryBalancer::Choose(const StepShape& shape) {
  ++chosen_;
  bool shift;
  if (recorded_[0] < options_.warm_up || recorded_[1] < options_.warm_up) {
    shift = chosen_ % 2 == 0;
  } else {
    double placed = 0, shifted = 0;
    for (int32_t s = 0; s < num_stages_; ++s) {
      placed = std::max(placed, Predict(s, shape, false));
      shifted = std::max(shifted, Predict(s, shape, true));
    }
    shift = shifted < placed;
    if (options_.explore_every > 0 && chosen_ % options_.explore_every == 0) shift = !shift;
  }
  chosen_shifted_ += shift ? 1 : 0;
  return shift;
}

void BoundaryBalancer::Record(const StepShape& shape, bool shifted,
                              absl::Span<const transport::StageTiming> timings) {
  const Vec x = Features(shape, shifted);
  bool any = false;
  for (const transport::StageTiming& t : timings) {
    if (t.stage < 0 || t.stage >= num_stages_) continue;
    const double y = (static_cast<double>(t.compute_seconds) + t.allreduce_seconds) * 1e3;
    if (!std::isfinite(y)) continue;
    Fit& fit = fits_[t.stage];
    const double keep = options_.forgetting;
    for (int i = 0; i < kFeatures; ++i) {
      for (int j = 0; j < kFeatures; ++j) fit.a[i][j] = keep * fit.a[i][j] + x[i] * x[j];
      fit.b[i] = keep * fit.b[i] + x[i] * y;
    }
    Solve(&fit);
    any = true;
  }
  if (any) ++recorded_[shifted ? 1 : 0];
}

}  // namespace strata::router
