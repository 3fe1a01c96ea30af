// Builds the backend the command line names: cpu (the default: the fast
// CPU kernels), reference (the plain float32 oracle) or cuda.
#ifndef STRATA_TOOLS_BACKEND_FACTORY_H_
#define STRATA_TOOLS_BACKEND_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "tools/flags.h"

namespace strata::tools {

// The flags MakeBackend reads; add them to a command's accepted names.
inline constexpr const char* kBackendFlags[] = {"backend", "threads", "isa", "kv-dtype"};

// --backend cpu|reference|cuda (default cpu), --threads N (default 1),
// --isa auto|avx512bf16|avx512|avx2|portable, --kv-dtype bf16|f32 (cpu).
absl::StatusOr<std::unique_ptr<kernels::Backend>> MakeBackend(const Flags& flags);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_BACKEND_FACTORY_H_
