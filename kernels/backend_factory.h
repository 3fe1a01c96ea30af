// Builds a backend by name: cpu (the fast CPU kernels, the default),
// reference (the plain float32 oracle) or cuda. The `strata` tool and the
// worker both use it; each parses its own flags into a BackendChoice.
#ifndef STRATA_KERNELS_BACKEND_FACTORY_H_
#define STRATA_KERNELS_BACKEND_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace strata::kernels {

struct BackendChoice {
  std::string name = "cpu";    // cpu | reference | cuda
  int threads = 1;             // cpu and reference
  std::string isa = "auto";    // cpu: auto | avx512bf16 | avx512 | avx2 | portable
  std::string kv_dtype = "bf16";  // cpu: bf16 | f32
};

// INVALID_ARGUMENT naming the field for unknown names; UNAVAILABLE for cuda
// where no GPU can be used.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendChoice& choice);

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_BACKEND_FACTORY_H_
