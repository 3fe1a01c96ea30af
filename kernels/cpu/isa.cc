#include "kernels/cpu/isa.h"

#include "absl/strings/str_cat.h"

namespace strata::kernels::cpu {

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kPortable: return "portable";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Bf16: return "avx512bf16";
  }
  return "?";
}

absl::StatusOr<Isa> ParseIsa(const std::string& name) {
  if (name == "auto") return BestIsa();
  for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    if (name == IsaName(isa)) {
      if (!IsaSupported(isa)) {
        return absl::FailedPreconditionError(absl::StrCat("this CPU lacks ", name));
      }
      return isa;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ISA \"", name, "\" (auto, portable, avx2, avx512, avx512bf16)"));
}

bool IsaSupported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kPortable:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
    case Isa::kAvx512Bf16:
      return IsaSupported(Isa::kAvx512) && __builtin_cpu_supports("avx512bf16");
  }
  return false;
}

Isa BestIsa() {
  for (Isa isa : {Isa::kAvx512Bf16, Isa::kAvx512, Isa::kAvx2}) {
    if (IsaSupported(isa)) return isa;
  }
  return Isa::kPortable;
}

}  // namespace strata::kernels::cpu
