#include "kernels/cpu/isa.h"

#include <cstdio>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/amx.h"

namespace strata::kernels::cpu {

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kPortable: return "portable";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Bf16: return "avx512bf16";
    case Isa::kAmx: return "amx";
  }
  return "?";
}

absl::StatusOr<Isa> ParseIsa(const std::string& name) {
  if (name == "auto") return BestIsa();
  for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16, Isa::kAmx}) {
    if (name == IsaName(isa)) {
      if (isa == Isa::kAmx && !IsaSupported(isa)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "amx cannot run here: ",
            IsaSupported(Isa::kAvx512Bf16) ? AmxStatus().message() : "this CPU lacks AVX-512 BF16"));
      }
      if (!IsaSupported(isa)) {
        return absl::FailedPreconditionError(absl::StrCat("this CPU lacks ", name));
      }
      return isa;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ISA \"", name, "\" (auto, portable, avx2, avx512, avx512bf16, amx)"));
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
    case Isa::kAmx:
      return IsaSupported(Isa::kAvx512Bf16) && AmxStatus().ok();
  }
  return false;
}

Isa BestIsa() {
  if (IsaSupported(Isa::kAvx512Bf16) && !AmxStatus().ok()) {
    static std::once_flag once;
    std::call_once(once, [] {
      std::fprintf(stderr, "strata: isa auto uses avx512bf16: %s\n", std::string(AmxStatus().message()).c_str());
    });
  }
  for (Isa isa : {Isa::kAmx, Isa::kAvx512Bf16, Isa::kAvx512, Isa::kAvx2}) {
    if (IsaSupported(isa)) return isa;
  }
  return Isa::kPortable;
}

}  // namespace strata::kernels::cpu
