// The instruction sets the fast CPU kernels are written for, detected once
// from cpuid. Every ISA kernel has a portable twin: plain C++ that performs
// the same operations in the same order, so the SIMD code can be checked
// bit for bit on any machine and a machine without the ISA still computes
// the same function.
#ifndef STRATA_KERNELS_CPU_ISA_H_
#define STRATA_KERNELS_CPU_ISA_H_

#include <string>

#include "absl/status/statusor.h"

namespace strata::kernels::cpu {

enum class Isa {
  kPortable,    // plain C++, 16-lane f32 scheme (the AVX-512F twin)
  kAvx2,        // AVX2 + FMA, 8-lane f32 scheme
  kAvx512,      // AVX-512F/BW, 16-lane f32 scheme
  kAvx512Bf16,  // AVX-512 BF16 (vdpbf16ps): bf16 activations, 16 lanes x 2
};

const char* IsaName(Isa isa);
// "portable", "avx2", "avx512", "avx512bf16"; "auto" gives the best present.
absl::StatusOr<Isa> ParseIsa(const std::string& name);
bool IsaSupported(Isa isa);
Isa BestIsa();

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_ISA_H_
