// The sum every rank of a tensor-parallel group computes from all ranks'
// contributions, in rank order (((x0 + x1) + x2) + ...), so that every rank
// ends bitwise equal whatever path carried the contributions.
#ifndef STRATA_WORKER_RANK_ORDER_SUM_H_
#define STRATA_WORKER_RANK_ORDER_SUM_H_

#include <cstdint>

namespace strata::worker {

// out[i] = parts[0][i] + parts[1][i] + ... + parts[count - 1][i], left to
// right; count >= 2. `out` may be one of the parts (each element is read
// from every part before it is written).
inline void SumInRankOrder(const float* const* parts, int count, int64_t n, float* out) {
  if (count == 2) {
    const float* a = parts[0];
    const float* b = parts[1];
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    float sum = parts[0][i];
    for (int q = 1; q < count; ++q) sum += parts[q][i];
    out[i] = sum;
  }
}

}  // namespace strata::worker

#endif  // STRATA_WORKER_RANK_ORDER_SUM_H_
