// Elementwise ops of the fast CPU backend with an AVX-512 path and its
// portable twin, bit for bit the same (vec_exp.h).
#ifndef STRATA_KERNELS_CPU_ELEMENTWISE_H_
#define STRATA_KERNELS_CPU_ELEMENTWISE_H_

#include <cstdint>

namespace strata::kernels::cpu {

// out[i] = gate[i] / (1 + exp(-gate[i])) * up[i] for i < n, with
// ExpScalar's exp (within 2 ulp of std::exp; the reference's SwiGlu uses
// std::exp, so the two agree to a few ulp, not bit for bit). avx512: take
// the 16-lane path (requires AVX-512F); same bits either way. out may be
// gate or up.
void SwiGlu(bool avx512, const float* gate, const float* up, int64_t n, float* out);

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_ELEMENTWISE_H_
