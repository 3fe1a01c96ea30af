// strata up: a router and S x T x R workers on this host (UCX over shared
// memory by default), healthy before it prints the address; Ctrl-C drains
// and stops everything. The backend, KV and router flags are the shared
// groups of base/flag_groups.h, passed on to the children only when given,
// so their defaults are the binaries' own.
#ifndef STRATA_TOOLS_CLUSTER_H_
#define STRATA_TOOLS_CLUSTER_H_

#include "absl/status/status.h"
#include "base/flags.h"

namespace strata::tools {

const base::FlagTable& UpFlags();
absl::Status Up(const base::ParsedFlags& flags);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_CLUSTER_H_
