// absl::Status <-> grpc::Status. The two enums share their numbering (both
// follow google.rpc.Code), so a code crosses a process boundary as itself
// and is never re-derived from a message.
#ifndef STRATA_BASE_GRPC_STATUS_H_
#define STRATA_BASE_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace strata::base {

// The same code and message.
grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace strata::base

#endif  // STRATA_BASE_GRPC_STATUS_H_
