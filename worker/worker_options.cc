#include "worker/worker_options.h"

#include <climits>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/flag_groups.h"
#include "base/status_macros.h"
#include "model/stage_place.h"

namespace strata::worker {
namespace {

using base::AddressFlag;
using base::BoolFlag;
using base::IntFlag;
using base::StringFlag;

absl::Status Bad(const std::string& name, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", why));
}

base::FlagGroup OwnFlags() {
  return {"worker",
          {StringFlag("model", std::nullopt, "DIR", "a Hugging Face model folder").Required(),
           StringFlag("model-name", std::nullopt, "NAME", "the model's name at registration (default: the folder's)"),
           StringFlag("pipeline", "p0", "NAME", "the pipeline replica this worker belongs to"),
           IntFlag("stage", 0, 0, 1023, "this worker's pipeline stage"),
           IntFlag("num-stages", 1, 1, 1024, "stages in the pipeline"),
           StringFlag("layers", std::nullopt, "FIRST:LAST",
                      "this stage's layers, [FIRST, LAST); N.5 is inside layer N, after its attention (default: "
                      "an even split)"),
           BoolFlag("movable-boundaries", false,
                    "also hold the MLP block beside each boundary with a neighbouring stage, so that the router "
                    "can move the boundary across it step by step to balance the stages (every stage of the "
                    "pipeline must say so)"),
           IntFlag("tp-rank", 0, 0, 63, "this worker's tensor-parallel rank"),
           IntFlag("tp-size", 1, 1, 64, "tensor-parallel ranks in the stage"),
           AddressFlag("tp-store", "the TP group's rendezvous, served by rank 0 (needed when --tp-size > 1)"),
           StringFlag("host", "127.0.0.1", "ADDR", "the address peers reach this worker at"),
           IntFlag("control-port", 0, 0, 65535, "gRPC control-plane port (0: any)"),
           base::MetricsPortFlag(),
           IntFlag("health-port", -1, -1, 65535,
                   "plaintext port of only grpc.health.v1, for probes: SERVING while serving steps, NOT_SERVING "
                   "while loading, draining or failed (-1: off, 0: any)"),
           AddressFlag("next-stage", "data plane of stage + 1, same rank (needed on every stage but the last)"),
           AddressFlag("result-address", "where the last stage sends results (default: from the router)"),
           AddressFlag("router", "the router's Fleet service to register with (default: none)"),
           IntFlag("reregister-after-ms", 5000, 100, 3600000,
                   "register again when no router heartbeat came for this long (a restarted router)"),
           IntFlag("step-timeout-ms", 30000, 100, 3600000, "a collective or send that takes longer fails the step"),
           StringFlag("ready-file", std::nullopt, "PATH", "written with the addresses once serving"),
           StringFlag("model-root", std::nullopt, "DIR", "--model must lie inside this folder (links resolved)"),
           StringFlag("mtls-router-name", "strata-router", "CN",
                      "with --mtls-*: the control service answers only a caller whose certificate has this CN")}};
}

// Checks across flags, which no single declaration can.
absl::Status CheckTogether(const WorkerOptions& o) {
  if (o.pipeline.empty()) return Bad("pipeline", "must not be empty");
  if (o.host.empty()) return Bad("host", "must not be empty");
  if (o.stage >= o.num_stages) return Bad("stage", absl::StrCat(o.stage, " is not below --num-stages ", o.num_stages));
  if (o.tp_rank >= o.tp_size) return Bad("tp-rank", absl::StrCat(o.tp_rank, " is not below --tp-size ", o.tp_size));
  if (o.tp_size > 1 && o.tp_store.empty()) return Bad("tp-store", "is required when --tp-size > 1");
  if (o.stage + 1 < o.num_stages && o.next_stage.empty()) {
    return Bad("next-stage", "is required on every stage but the last");
  }
  return absl::OkStatus();
}

// --model resolved (links and "..") must lie inside --model-root.
absl::Status CheckModelRoot(const WorkerOptions& o) {
  if (o.model_root.empty()) return absl::OkStatus();
  char root[PATH_MAX], model[PATH_MAX];
  if (::realpath(o.model_root.c_str(), root) == nullptr) return Bad("model-root", o.model_root + " does not exist");
  if (::realpath(o.model_dir.c_str(), model) == nullptr) return Bad("model", o.model_dir + " does not exist");
  const std::string r = root, m = model;
  if (m != r && m.rfind(r + "/", 0) != 0) return Bad("model", absl::StrCat(o.model_dir, " is outside --model-root ", r));
  return absl::OkStatus();
}

absl::Status ParseLayers(const std::string& l, WorkerOptions* o) {
  const size_t colon = l.find(':');
  const auto bad = [&] {
    return Bad("layers", absl::StrCat("\"", l, "\" is not FIRST:LAST with 0 <= FIRST < LAST (each N or N.5)"));
  };
  if (colon == std::string::npos) return bad();
  auto first = model::ParseHalfLayer(l.substr(0, colon));
  auto last = model::ParseHalfLayer(l.substr(colon + 1));
  if (!first.ok() || !last.ok() || *last <= *first) return bad();
  o->begin_half = *first;
  o->end_half = *last;
  return absl::OkStatus();
}

}  // namespace

const base::FlagTable& WorkerFlags() {
  static const base::FlagTable* table = new base::FlagTable(
      "strata-worker --model DIR [flags]",
      "One tensor-parallel rank of one pipeline stage: loads its slice of the model, runs the steps the\n"
      "router sends over UCX and forwards activations. SIGTERM or SIGINT drains, then exits 0.",
      {OwnFlags(), base::BackendFlags(), base::KvFlags(), base::DataPlaneFlags(), base::ControlTlsFlags()});
  return *table;
}

std::string WorkerUsage() { return WorkerFlags().Help(); }

kernels::BackendChoice BackendChoiceFromFlags(const base::ParsedFlags& f) {
  kernels::BackendChoice c;
  c.name = f.String("backend");
  c.threads = static_cast<int>(f.Int("threads"));
  c.isa = f.String("isa");
  c.kv_dtype = f.String("kv-dtype");
  return c;
}

absl::StatusOr<WorkerOptions> ParseWorkerOptions(const std::vector<std::string>& args) {
  STRATA_ASSIGN_OR_RETURN(const base::ParsedFlags f, WorkerFlags().Parse(args));
  WorkerOptions o;
  o.model_dir = f.String("model");
  o.model_name = f.String("model-name");
  if (o.model_name.empty()) {
    std::string d = o.model_dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    o.model_name = d.substr(d.rfind('/') == std::string::npos ? 0 : d.rfind('/') + 1);
  }
  o.pipeline = f.String("pipeline");
  o.stage = static_cast<int>(f.Int("stage"));
  o.num_stages = static_cast<int>(f.Int("num-stages"));
  if (f.HasValue("layers")) STRATA_RETURN_IF_ERROR(ParseLayers(f.String("layers"), &o));
  o.movable_boundaries = f.Bool("movable-boundaries");
  o.tp_rank = static_cast<int>(f.Int("tp-rank"));
  o.tp_size = static_cast<int>(f.Int("tp-size"));
  o.tp_store = f.String("tp-store");
  o.backend = BackendChoiceFromFlags(f);
  o.host = f.String("host");
  o.data_port = static_cast<int>(f.Int("data-port"));
  o.control_port = static_cast<int>(f.Int("control-port"));
  o.metrics_port = static_cast<int>(f.Int("metrics-port"));
  o.health_port = static_cast<int>(f.Int("health-port"));
  o.next_stage = f.String("next-stage");
  o.result_address = f.String("result-address");
  o.router = f.String("router");
  o.block_size = f.Int("block-size");
  o.kv_blocks = f.Int("kv-blocks");
  o.kv_memory_mb = f.Int("kv-memory-mb");
  o.ucx_peer_errors = f.Bool("ucx-peer-errors");
  o.step_timeout_ms = f.Int("step-timeout-ms");
  o.reregister_after_ms = f.Int("reregister-after-ms");
  o.ready_file = f.String("ready-file");
  o.model_root = f.String("model-root");
  o.control_tls = {f.String("mtls-ca"), f.String("mtls-cert"), f.String("mtls-key")};
  o.router_name = f.String("mtls-router-name");
  STRATA_RETURN_IF_ERROR(CheckTogether(o));
  STRATA_RETURN_IF_ERROR(CheckModelRoot(o));
  return o;
}

}  // namespace strata::worker
