#include "tools/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "kernels/backend_factory.h"
#include "base/status_macros.h"

namespace strata::tools {

absl::StatusOr<std::unique_ptr<kernels::Backend>> MakeBackend(const Flags& f) {
  kernels::BackendChoice c;
  STRATA_ASSIGN_OR_RETURN(c.name, f.GetChoice("backend", "cpu", {"cpu", "reference", "cuda"}));
  STRATA_ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads", 1, 1, 1024));
  c.threads = static_cast<int>(threads);
  c.isa = f.GetString("isa", "auto");
  STRATA_ASSIGN_OR_RETURN(c.kv_dtype, f.GetChoice("kv-dtype", "bf16", {"bf16", "f32"}));
  auto backend = kernels::MakeBackend(c);
  if (!backend.ok() && backend.status().code() == absl::StatusCode::kInvalidArgument) {
    return absl::InvalidArgumentError(absl::StrCat("--", backend.status().message()));
  }
  return backend;
}

}  // namespace strata::tools
