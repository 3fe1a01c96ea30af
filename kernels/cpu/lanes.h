// The fixed reduction every fast CPU sum ends with: L independent lanes,
// added pairwise (halves, then quarters, ...). Kernels that keep their
// partial sums in L lanes and finish with TreeSum reduce in an order that
// depends on nothing but L: not the batch, the blocking or the thread.
#ifndef STRATA_KERNELS_CPU_LANES_H_
#define STRATA_KERNELS_CPU_LANES_H_

namespace strata::kernels::cpu {

template <int L>
inline float TreeSum(float* lanes) {
  for (int width = L / 2; width >= 1; width /= 2) {
    for (int i = 0; i < width; ++i) lanes[i] = lanes[i] + lanes[i + width];
  }
  return lanes[0];
}

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_LANES_H_
