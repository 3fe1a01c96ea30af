// The flag groups that more than one binary reads, declared here once so
// that `strata up` and the processes it starts agree on every name, type,
// range and default: a launcher includes a group in its own table and
// passes on only what the user set (ParsedFlags::ArgsFor), so each default
// lives in its declaration below and nowhere else.
#ifndef STRATA_BASE_FLAG_GROUPS_H_
#define STRATA_BASE_FLAG_GROUPS_H_

#include "base/flags.h"

namespace strata::base {

// --backend, --threads, --isa, --kv-dtype: the kernels a process runs
// (strata run, bench-engine and up; strata-worker).
FlagGroup BackendFlags();

// --block-size alone (strata run, whose KV pool grows as it needs).
Flag BlockSizeFlag();

// --block-size, --kv-memory-mb, --kv-blocks: a worker's KV pool (strata up;
// strata-worker).
FlagGroup KvFlags();

// --data-port, --ucx-peer-errors: a process's end of the UCX data plane
// (strata-router, strata-worker).
FlagGroup DataPlaneFlags();

// --metrics-port: where /metrics is served (strata-router, strata-worker;
// strata up passes it to the router).
Flag MetricsPortFlag();

// --http-port: the router's OpenAI-compatible HTTP API (strata-router;
// strata up passes it on).
Flag HttpPortFlag();

// The router's admission limits, scheduler budget, fleet timing and drain
// (strata-router; strata up passes them on).
FlagGroup RouterEngineFlags();

// --mtls-ca, --mtls-cert, --mtls-key: the control plane's mutual TLS
// (strata-router's Fleet service and its calls to workers; strata-worker's
// control service and registration). All unset: plaintext.
FlagGroup ControlTlsFlags();

// --tls-cert, --tls-key, --tls-client-ca, --auth-tokens, --auth-health: the
// router's public API (gRPC and HTTP): TLS, and the bearer tokens callers
// present.
FlagGroup PublicApiSecurityFlags();

}  // namespace strata::base

#endif  // STRATA_BASE_FLAG_GROUPS_H_
