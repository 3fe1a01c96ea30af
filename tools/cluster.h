// The cluster commands of the strata tool:
//   strata up: a router and S x T x R workers on this host (UCX over shared
//     memory by default), healthy before it prints the address; Ctrl-C
//     drains and stops everything.
//   strata generate: one Generate call against a router.
#ifndef STRATA_TOOLS_CLUSTER_H_
#define STRATA_TOOLS_CLUSTER_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strata::tools {

absl::Status Up(const std::vector<std::string>& args);
absl::Status Generate(const std::vector<std::string>& args);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_CLUSTER_H_
