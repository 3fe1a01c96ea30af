// strata up: a router and S x T x R workers on this host (UCX over shared
// memory by default), healthy before it prints the address; Ctrl-C or
// SIGTERM (also while it comes up) drains and stops everything. The
// backend, KV and router flags are the shared groups of
// base/flag_groups.h, passed on to the children only when given, so their
// defaults are the binaries' own.
//
// Supervision: every port a child will listen on is checked before any
// child starts (a second strata up on a taken port fails, naming it); a
// worker that exits is restarted with backoff (--restart-workers); the
// children die with strata up, however it dies (PR_SET_PDEATHSIG).
#ifndef STRATA_TOOLS_CLUSTER_H_
#define STRATA_TOOLS_CLUSTER_H_

#include "absl/status/status.h"
#include "base/flags.h"

namespace strata::tools {

const base::FlagTable& UpFlags();
absl::Status Up(const base::ParsedFlags& flags);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_CLUSTER_H_
