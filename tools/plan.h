// `strata plan`'s arithmetic: how a Llama model splits over a set of GPUs
// (or CPU hosts), how much memory each one has left for the KV cache, and
// what that buys. Pure computation, no I/O: tools/plan_command.cc parses
// the flags and prints, tools/plan_launch.cc turns a plan into the
// settings the workers and Kubernetes run with.
//
// Policy (docs/operations.md says the same):
// - A replica (one pipeline) is TP x PP devices. TP stays inside a node
//   (NVLink; a CPU host is a node of one), divides the KV heads (hence the
//   query heads), the FFN width and the vocabulary (worker::ValidateTp).
// - A replica fills part of one node (its size divides the node) or whole
//   nodes (a multiple of the node), so replicas tile the machines.
// - A fraction of every device's memory (--reserve, 10% by default, the
//   convention of vLLM's gpu_memory_utilization 0.9) is kept for
//   activations, workspaces, the CUDA context and NCCL buffers; weights and
//   the KV cache share the rest.
// - A replica fits when its weights leave room on every device for the KV
//   cache of at least one sequence of --context tokens.
// - The plan is the smallest replica that fits; among replicas of that
//   size, the widest TP (TP within a node before PP). As many replicas as
//   the devices hold run side by side.
// - Layers go to stages balanced by memory: stage 0 also holds the
//   embedding and the last stage the final norm and lm_head (a tied
//   lm_head is a copy there when PP > 1), so the end stages may get fewer
//   layers. Every worker of a pipeline gets the same KV block count (the
//   router's block tables are per pipeline), so the stage with the least
//   room sets it.
// - Weights: bf16 is 2 bytes everywhere; fp8 stores the decoder layers'
//   projections (q, k, v, o, gate, up, down) in 1 byte, and keeps the
//   embedding, lm_head and norms in bf16, as FP8 checkpoints of Llama 3.1
//   do. The KV cache is bf16 (2 bytes per element) either way.
// - Decode roofline: one token of one stream reads every weight it uses
//   once (the embedding only one row); the ranks of a stage read their
//   slices in parallel and the stages run one after another, so a token
//   takes sum over stages of (bytes per device / bandwidth).
#ifndef STRATA_TOOLS_PLAN_H_
#define STRATA_TOOLS_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"

namespace strata::tools {

enum class PlanDevice { kGpu, kCpuHost };
enum class WeightDtype { kBf16, kFp8 };

struct PlanRequest {
  model::LlamaConfig model;
  std::string model_label = "model";  // "405b" or the folder's name, for messages
  PlanDevice device = PlanDevice::kGpu;
  int64_t devices = 1;              // GPUs, or CPU hosts
  int64_t memory_bytes = 0;         // per GPU, or per host
  int64_t devices_per_node = 8;     // GPUs per node; 1 for CPU hosts
  WeightDtype dtype = WeightDtype::kBf16;
  int64_t context = 131072;         // tokens one sequence must be able to hold
  double bandwidth_bytes_per_s = 0;  // memory bandwidth of one device
  double reserve_fraction = 0.10;   // of memory_bytes, for activations and runtime
  int64_t block_size = 16;          // tokens per KV block (the workers' --block-size)
};

struct StagePlanEntry {
  int64_t first_layer = 0, last_layer = 0;  // [first, last)
  bool has_embedding = false, has_lm_head = false;
  int64_t weight_bytes_per_device = 0;
  int64_t kv_bytes_per_token_per_device = 0;  // this stage's layers, one TP slice
  int64_t kv_bytes_per_device = 0;            // at the plan's block count
  int64_t layers() const { return last_layer - first_layer; }
};

struct Plan {
  bool fits = false;
  std::string reason;  // why not, when !fits
  // The replica. When !fits: the largest one tried (its numbers show why),
  // or tp = pp = 0 when none could be formed at all.
  int64_t tp = 0, pp = 0;
  int64_t devices_per_replica = 0;
  int64_t replicas = 0;        // side by side on the devices given
  int64_t unused_devices = 0;  // devices - replicas * devices_per_replica
  // The fewest devices (of this memory and node size) that would fit, when
  // !fits; 0 when none up to 1024 nodes would.
  int64_t needs_devices = 0;
  std::vector<StagePlanEntry> stages;
  int64_t model_weight_bytes = 0;       // the whole model at the dtype
  int64_t weight_bytes_per_device = 0;  // the fullest device
  int64_t reserve_bytes_per_device = 0;
  // Memory left on the fullest device once its weights are in: the
  // reserve (activations, runtime) plus the KV cache.
  int64_t free_bytes_per_device = 0;
  int64_t kv_bytes_per_token = 0;  // the whole model, all ranks
  int64_t kv_blocks_per_worker = 0;
  int64_t kv_tokens_per_pipeline = 0;
  int64_t concurrent_8k = 0, concurrent_128k = 0;  // sequences of 8192 / 131072 tokens
  double decode_tokens_per_s = 0;             // one stream, short context
  double decode_tokens_per_s_at_context = 0;  // one stream at --context tokens
  std::vector<int64_t> layers_per_stage() const;
};

// INVALID_ARGUMENT for a request that makes no sense (no devices, no
// memory, a context beyond the model's, devices that are not whole nodes,
// ...), naming the flag. A model that does not fit is a Plan with !fits
// and its reason, not an error.
absl::StatusOr<Plan> MakePlan(const PlanRequest& request);

// The memory one device of a replica of tp x pp needs for stage `stage`
// holding `layers` layers (no KV), exposed for the tests' hand checks.
int64_t StageWeightBytes(const PlanRequest& request, int64_t tp, int64_t pp, int64_t stage, int64_t layers);

// "80GiB", "80 GB", "1.5TiB", "512MiB", "85899345920" (bytes). INVALID_ARGUMENT
// naming `flag` and the value otherwise.
absl::StatusOr<int64_t> ParseByteSize(const std::string& flag, const std::string& text);
// "3.35TB/s", "900GB/s", "2TiB/s" in bytes per second.
absl::StatusOr<double> ParseBandwidth(const std::string& flag, const std::string& text);
// "101.46 GB (94.49 GiB)".
std::string FormatBytes(int64_t bytes);

// Parameters of one decoder layer's projections (q, k, v, o, gate, up,
// down): what a token reads of the layer, the norms aside.
int64_t LinearParamsPerLayer(const model::LlamaConfig& c);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_PLAN_H_
