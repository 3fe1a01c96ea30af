#include "tools/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/reference/reference_backend.h"
#include "third_party/status_macros.h"

namespace strata::tools {

absl::StatusOr<std::unique_ptr<kernels::Backend>> MakeBackend(const Flags& f) {
  STRATA_ASSIGN_OR_RETURN(const std::string name, f.GetChoice("backend", "cpu", {"cpu", "reference", "cuda"}));
  STRATA_ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads", 1, 1, 1024));
  if (name == "reference") {
    return std::unique_ptr<kernels::Backend>(new kernels::ReferenceBackend(static_cast<int>(threads)));
  }
  if (name == "cuda") {
    auto cuda = kernels::cuda::CudaBackend::Create();
    if (!cuda.ok()) return absl::UnavailableError(absl::StrCat("--backend cuda: ", cuda.status().message()));
    return std::unique_ptr<kernels::Backend>(std::move(*cuda));
  }
  kernels::cpu::CpuBackendOptions o;
  o.threads = static_cast<int>(threads);
  auto isa = kernels::cpu::ParseIsa(f.GetString("isa", "auto"));
  if (!isa.ok()) return absl::InvalidArgumentError(absl::StrCat("--isa: ", isa.status().message()));
  o.isa = *isa;
  STRATA_ASSIGN_OR_RETURN(const std::string kv, f.GetChoice("kv-dtype", "bf16", {"bf16", "f32"}));
  o.kv_dtype = kv == "bf16" ? model::DType::kBF16 : model::DType::kF32;
  return std::unique_ptr<kernels::Backend>(new kernels::cpu::CpuBackend(o));
}

}  // namespace strata::tools
