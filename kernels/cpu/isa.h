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
  kAmx,         // AMX-BF16 tiles (TDPBF16PS) for bf16 products; AVX-512 BF16 otherwise
};

const char* IsaName(Isa isa);
// "portable", "avx2", "avx512", "avx512bf16", "amx"; "auto" gives the best
// present. An ISA that cannot run here is FAILED_PRECONDITION saying why.
absl::StatusOr<Isa> ParseIsa(const std::string& name);
// kAmx also needs the kernel's permission for tile state (kernels/cpu/amx.h).
bool IsaSupported(Isa isa);
// The best ISA present. Where the CPU has AVX-512 BF16 but AMX cannot run,
// says why once on stderr.
Isa BestIsa();

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_ISA_H_
