// strata generate: one Generate call against a router, as any gRPC client
// would make it.
#ifndef STRATA_TOOLS_GENERATE_H_
#define STRATA_TOOLS_GENERATE_H_

#include "absl/status/status.h"
#include "base/flags.h"

namespace strata::tools {

const base::FlagTable& GenerateFlags();
// The call's status is the command's: a router's INVALID_ARGUMENT exits 2.
absl::Status Generate(const base::ParsedFlags& flags);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_GENERATE_H_
