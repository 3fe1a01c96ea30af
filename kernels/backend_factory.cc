#include "kernels/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/reference/reference_backend.h"

namespace strata::kernels {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendChoice& c) {
  if (c.threads < 1 || c.threads > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be in [1, 1024], got ", c.threads));
  }
  if (c.name == "reference") return std::unique_ptr<Backend>(new ReferenceBackend(c.threads));
  if (c.name == "cuda") {
    auto cuda = cuda::CudaBackend::Create();
    if (!cuda.ok()) return absl::UnavailableError(absl::StrCat("backend cuda: ", cuda.status().message()));
    return std::unique_ptr<Backend>(std::move(*cuda));
  }
  if (c.name != "cpu") {
    return absl::InvalidArgumentError(absl::StrCat("backend \"", c.name, "\" is not one of cpu, reference, cuda"));
  }
  cpu::CpuBackendOptions o;
  o.threads = c.threads;
  auto isa = cpu::ParseIsa(c.isa);
  if (!isa.ok()) return absl::InvalidArgumentError(absl::StrCat("isa: ", isa.status().message()));
  o.isa = *isa;
  if (c.kv_dtype != "bf16" && c.kv_dtype != "f32") {
    return absl::InvalidArgumentError(absl::StrCat("kv dtype \"", c.kv_dtype, "\" is not one of bf16, f32"));
  }
  o.kv_dtype = c.kv_dtype == "bf16" ? model::DType::kBF16 : model::DType::kF32;
  return std::unique_ptr<Backend>(new cpu::CpuBackend(o));
}

}  // namespace strata::kernels
