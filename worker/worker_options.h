// strata-worker's configuration, parsed with its flag table (base/flags.h):
// the worker's own flags plus the shared backend, KV, data-plane and
// metrics groups (base/flag_groups.h), each declared once. `--config FILE`
// reads the same names from a JSON object; every value is checked, and an
// error names the flag and the value.
#ifndef STRATA_WORKER_WORKER_OPTIONS_H_
#define STRATA_WORKER_WORKER_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/flags.h"
#include "base/tls.h"
#include "kernels/backend_factory.h"

namespace strata::worker {

struct WorkerOptions {
  std::string model_dir;           // --model
  std::string model_name;          // --model-name (default: the folder's name)
  std::string pipeline = "p0";     // --pipeline
  int stage = 0;                   // --stage
  int num_stages = 1;              // --num-stages
  // --layers FIRST:LAST in half layers (model/stage_place.h; "9.5" is
  // half 19, after layer 9's attention); -1: an even split.
  int64_t begin_half = -1;
  int64_t end_half = -1;
  // --movable-boundaries: also hold the MLP beside each boundary with a
  // neighbouring stage, so that the router can move the boundary step by
  // step (StageSpec::movable_begin/end, router/boundary_balancer.h).
  bool movable_boundaries = false;
  int tp_rank = 0;                 // --tp-rank
  int tp_size = 1;                 // --tp-size
  std::string tp_store;            // --tp-store HOST:PORT (rank 0 serves it); needed when tp-size > 1
  kernels::BackendChoice backend;  // --backend, --threads, --isa, --kv-dtype
  std::string host = "127.0.0.1";  // --host: the address peers reach this worker at
  int data_port = 0;               // --data-port (0: any)
  int control_port = 0;            // --control-port (0: any)
  int metrics_port = -1;           // --metrics-port (-1: off, 0: any)
  int health_port = -1;            // --health-port: plaintext grpc.health.v1 only, for probes (-1: off, 0: any)
  std::string next_stage;          // --next-stage HOST:PORT (data plane of stage+1, same rank)
  std::string result_address;      // --result-address HOST:PORT (else from the router)
  std::string router;              // --router HOST:PORT (Fleet service); empty: do not register
  int64_t block_size = 16;         // --block-size (tokens per KV block)
  int64_t kv_blocks = 0;           // --kv-blocks (0: from --kv-memory-mb)
  int64_t kv_memory_mb = 256;      // --kv-memory-mb: budget for the KV pool
  bool ucx_peer_errors = true;     // --ucx-peer-errors true|false
  int64_t step_timeout_ms = 30000; // --step-timeout-ms: a collective or send that takes longer fails the step
  int64_t reregister_after_ms = 5000;  // --reregister-after-ms: no heartbeat this long, register again
  std::string ready_file;          // --ready-file: written with the addresses once serving
  std::string model_root;          // --model-root: --model must lie inside it (symbolic links resolved)
  base::TlsFiles control_tls;      // --mtls-ca/--mtls-cert/--mtls-key: the control plane's mutual TLS
  std::string router_name = "strata-router";  // --mtls-router-name: the CN the control service answers
};

// strata-worker's flag table.
const base::FlagTable& WorkerFlags();

// Parses argv (without the program name).
absl::StatusOr<WorkerOptions> ParseWorkerOptions(const std::vector<std::string>& args);

// The --help text, from the table.
std::string WorkerUsage();

// The backend group's values (base::BackendFlags) as the kernels' factory
// takes them; `strata run` and `bench-engine` use it too.
kernels::BackendChoice BackendChoiceFromFlags(const base::ParsedFlags& flags);

}  // namespace strata::worker

#endif  // STRATA_WORKER_WORKER_OPTIONS_H_
