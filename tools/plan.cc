#include "tools/plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "model/stage_place.h"
#include "worker/shard.h"

namespace strata::tools {
namespace {

constexpr int64_t kBf16 = 2;       // bytes
constexpr int64_t kMaxNodes = 1024;  // how far "needs N devices" looks

int64_t WeightBytes(WeightDtype d) { return d == WeightDtype::kFp8 ? 1 : 2; }

// One device's bytes of one layer at TP `tp`: its slice of the projections
// and the two norms whole.
int64_t LayerBytes(const PlanRequest& r, int64_t tp) {
  return LinearParamsPerLayer(r.model) / tp * WeightBytes(r.dtype) + 2 * r.model.hidden_size * kBf16;
}

int64_t EmbeddingBytes(const PlanRequest& r, int64_t tp) {
  return r.model.vocab_size / tp * r.model.hidden_size * kBf16;
}

// The bytes stage `stage` of `pp` holds besides its layers: the embedding
// on stage 0; the final norm and lm_head on the last (the lm_head is the
// embedding itself when tied and in one stage).
int64_t FixedBytes(const PlanRequest& r, int64_t tp, int64_t pp, int64_t stage) {
  int64_t bytes = 0;
  if (stage == 0) bytes += EmbeddingBytes(r, tp);
  if (stage == pp - 1) {
    bytes += r.model.hidden_size * kBf16;
    if (!(r.model.tie_word_embeddings && pp == 1)) bytes += EmbeddingBytes(r, tp);
  }
  return bytes;
}

// K and V of one token in one layer, one TP slice.
int64_t KvBytesPerLayerToken(const PlanRequest& r, int64_t tp) {
  return 2 * (r.model.num_kv_heads / tp) * r.model.head_dim * kBf16;
}

int64_t ModelWeightBytes(const PlanRequest& r) {
  const model::LlamaConfig& c = r.model;
  return c.num_layers * (LinearParamsPerLayer(c) * WeightBytes(r.dtype) + 2 * c.hidden_size * kBf16) +
         c.vocab_size * c.hidden_size * kBf16 * (c.tie_word_embeddings ? 1 : 2) + c.hidden_size * kBf16;
}

// Layer counts per stage, balanced by memory: each layer goes to the stage
// that is lightest with it (identical items added to the current minimum
// give the smallest maximum); ties go to the earlier stage.
std::vector<int64_t> BalanceLayers(const PlanRequest& r, int64_t tp, int64_t pp) {
  const int64_t layer = LayerBytes(r, tp);
  std::vector<int64_t> n(pp, 1);
  for (int64_t left = r.model.num_layers - pp; left > 0; --left) {
    int64_t best = 0;
    for (int64_t s = 1; s < pp; ++s) {
      if (FixedBytes(r, tp, pp, s) + (n[s] + 1) * layer < FixedBytes(r, tp, pp, best) + (n[best] + 1) * layer) {
        best = s;
      }
    }
    ++n[best];
  }
  return n;
}

std::string Shape(int64_t tp, int64_t pp) { return absl::StrCat("TP ", tp, " x PP ", pp); }

const char* DeviceWord(const PlanRequest& r) { return r.device == PlanDevice::kGpu ? "GPU" : "host"; }

// One replica of tp x pp: its stages, KV room and roofline. `why` says
// what stops it when it does not fit.
Plan Evaluate(const PlanRequest& r, int64_t tp, int64_t pp, std::string* why) {
  Plan p;
  p.tp = tp;
  p.pp = pp;
  p.devices_per_replica = tp * pp;
  p.model_weight_bytes = ModelWeightBytes(r);
  p.reserve_bytes_per_device = static_cast<int64_t>(std::floor(r.memory_bytes * r.reserve_fraction));
  p.kv_bytes_per_token = r.model.num_layers * KvBytesPerLayerToken(r, 1);
  const std::vector<int64_t> layers = BalanceLayers(r, tp, pp);
  const int64_t usable = r.memory_bytes - p.reserve_bytes_per_device;
  int64_t first = 0, blocks = std::numeric_limits<int64_t>::max();
  double read_bytes = 0, kv_read_bytes = 0;
  for (int64_t s = 0; s < pp; ++s) {
    StagePlanEntry e;
    e.first_layer = first;
    e.last_layer = first + layers[s];
    first = e.last_layer;
    e.has_embedding = s == 0;
    e.has_lm_head = s == pp - 1;
    e.weight_bytes_per_device = FixedBytes(r, tp, pp, s) + layers[s] * LayerBytes(r, tp);
    e.kv_bytes_per_token_per_device = layers[s] * KvBytesPerLayerToken(r, tp);
    const int64_t room = usable - e.weight_bytes_per_device;
    blocks = std::min(blocks, room < 0 ? -1 : room / (e.kv_bytes_per_token_per_device * r.block_size));
    p.weight_bytes_per_device = std::max(p.weight_bytes_per_device, e.weight_bytes_per_device);
    // A token reads one row of the embedding, every other weight whole.
    read_bytes += e.weight_bytes_per_device - (e.has_embedding ? EmbeddingBytes(r, tp) : 0);
    kv_read_bytes += static_cast<double>(e.kv_bytes_per_token_per_device) * r.context;
    p.stages.push_back(e);
  }
  p.free_bytes_per_device = r.memory_bytes - p.weight_bytes_per_device;
  p.decode_tokens_per_s = r.bandwidth_bytes_per_s / read_bytes;
  p.decode_tokens_per_s_at_context = r.bandwidth_bytes_per_s / (read_bytes + kv_read_bytes);
  const std::string on = absl::StrCat(Shape(tp, pp), " (", tp * pp, " ", DeviceWord(r), tp * pp > 1 ? "s" : "", ")");
  if (blocks < 0) {
    *why = absl::StrCat("with ", on, " the fullest ", DeviceWord(r), " holds ", FormatBytes(p.weight_bytes_per_device),
                        " of weights, above the ", FormatBytes(usable), " each has after the ",
                        static_cast<int>(std::lround(r.reserve_fraction * 100)),
                        "% reserve for activations and runtime");
    return p;
  }
  p.kv_blocks_per_worker = blocks;
  p.kv_tokens_per_pipeline = blocks * r.block_size;
  p.concurrent_8k = p.kv_tokens_per_pipeline / 8192;
  p.concurrent_128k = p.kv_tokens_per_pipeline / 131072;
  for (StagePlanEntry& e : p.stages) e.kv_bytes_per_device = p.kv_tokens_per_pipeline * e.kv_bytes_per_token_per_device;
  p.fits = p.kv_tokens_per_pipeline >= r.context;
  if (!p.fits) {
    *why = absl::StrCat("with ", on, " the weights leave room for ", p.kv_tokens_per_pipeline,
                        " KV tokens per pipeline, fewer than one sequence of --context ", r.context);
  }
  return p;
}

// Replica sizes in increasing order: the divisors of a node, then whole
// nodes, up to `limit` devices.
std::vector<int64_t> ReplicaSizes(int64_t node, int64_t limit) {
  std::vector<int64_t> sizes;
  for (int64_t g = 1; g <= node && g <= limit; ++g) {
    if (node % g == 0) sizes.push_back(g);
  }
  for (int64_t g = 2 * node; g <= limit; g += node) sizes.push_back(g);
  return sizes;
}

struct Search {
  bool found = false;
  Plan plan;            // the fit, or the widest replica of the largest size tried
  std::string why;      // why that one does not fit
  bool tried_any = false;
};

// The smallest replica of at most `limit` devices that fits, widest TP first.
Search SearchReplicas(const PlanRequest& r, int64_t node, int64_t limit) {
  Search out;
  for (int64_t g : ReplicaSizes(node, limit)) {
    bool first_of_size = true;
    for (int64_t tp = std::min(g, node); tp >= 1; --tp) {
      if (g % tp != 0 || !worker::ValidateTp(r.model, 0, static_cast<int>(tp)).ok()) continue;
      const int64_t pp = g / tp;
      if (pp > r.model.num_layers || pp > model::kMaxStages) continue;
      std::string why;
      Plan p = Evaluate(r, tp, pp, &why);
      if (p.fits) {
        out.found = true;
        out.plan = std::move(p);
        return out;
      }
      if (first_of_size) {
        out.plan = std::move(p);
        out.why = why;
        out.tried_any = true;
        first_of_size = false;
      }
    }
  }
  return out;
}

absl::Status Bad(const std::string& flag, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", why));
}

}  // namespace

std::vector<int64_t> Plan::layers_per_stage() const {
  std::vector<int64_t> out;
  for (const StagePlanEntry& e : stages) out.push_back(e.layers());
  return out;
}

int64_t StageWeightBytes(const PlanRequest& r, int64_t tp, int64_t pp, int64_t stage, int64_t layers) {
  return FixedBytes(r, tp, pp, stage) + layers * LayerBytes(r, tp);
}

absl::StatusOr<Plan> MakePlan(const PlanRequest& r) {
  const bool gpu = r.device == PlanDevice::kGpu;
  const char* devices_flag = gpu ? "gpus" : "cpu-hosts";
  const char* memory_flag = gpu ? "gpu-memory" : "host-memory";
  if (auto s = r.model.Validate(); !s.ok()) return s;
  if (r.devices < 1 || r.devices > (int64_t{1} << 20)) {
    return Bad(devices_flag, absl::StrCat(r.devices, " is outside [1, 1048576]"));
  }
  if (r.memory_bytes < (int64_t{1} << 20)) {
    return Bad(memory_flag, absl::StrCat(r.memory_bytes, " bytes is less than 1 MiB"));
  }
  if (!(r.bandwidth_bytes_per_s > 0) || !std::isfinite(r.bandwidth_bytes_per_s)) {
    return Bad(gpu ? "gpu-bandwidth" : "host-bandwidth", "must be positive");
  }
  if (!(r.reserve_fraction >= 0 && r.reserve_fraction < 1)) {
    return Bad("reserve", absl::StrCat(r.reserve_fraction, " is outside [0, 1)"));
  }
  if (r.block_size < 1) return Bad("block-size", "must be positive");
  if (r.context < 1 || r.context > r.model.max_position_embeddings) {
    return Bad("context", absl::StrCat(r.context, " is outside [1, ", r.model.max_position_embeddings,
                                       "] (the model's max_position_embeddings)"));
  }
  const int64_t per_node = gpu ? r.devices_per_node : 1;
  if (per_node < 1 || per_node > 64) return Bad("gpus-per-node", absl::StrCat(per_node, " is outside [1, 64]"));
  if (r.devices > per_node && r.devices % per_node != 0) {
    return Bad(devices_flag, absl::StrCat(r.devices, " is not a whole number of nodes of --gpus-per-node ", per_node));
  }
  const int64_t node = std::min(per_node, r.devices);

  Search here = SearchReplicas(r, node, r.devices);
  if (here.found) {
    Plan p = std::move(here.plan);
    p.replicas = r.devices / p.devices_per_replica;
    p.unused_devices = r.devices - p.replicas * p.devices_per_replica;
    return p;
  }
  Plan p = std::move(here.plan);
  p.fits = false;
  p.replicas = 0;
  const Search more = SearchReplicas(r, per_node, per_node * kMaxNodes);
  p.needs_devices = more.found ? more.plan.devices_per_replica : 0;
  const char* dtype = r.dtype == WeightDtype::kFp8 ? "fp8" : "bf16";
  p.reason = absl::StrCat(r.model_label, " in ", dtype, " (", FormatBytes(p.model_weight_bytes), " of weights) does not fit on ",
                          r.devices, " ", DeviceWord(r), r.devices > 1 ? "s" : "", " of ", FormatBytes(r.memory_bytes));
  if (here.tried_any) absl::StrAppend(&p.reason, ": ", here.why);
  if (more.found) {
    absl::StrAppend(&p.reason, "; it needs ", more.plan.devices_per_replica, " such ", DeviceWord(r), "s (",
                    Shape(more.plan.tp, more.plan.pp), ")");
  } else {
    absl::StrAppend(&p.reason, "; no replica of up to ", per_node * kMaxNodes, " such ", DeviceWord(r), "s fits");
  }
  if (r.dtype == WeightDtype::kBf16) absl::StrAppend(&p.reason, ", or try --dtype fp8");
  return p;
}

absl::StatusOr<int64_t> ParseByteSize(const std::string& flag, const std::string& text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  size_t i = 0;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.')) ++i;
  double number = 0;
  if (i == 0 || !absl::SimpleAtod(t.substr(0, i), &number) || !std::isfinite(number) || number <= 0) {
    return Bad(flag, absl::StrCat("\"", text, "\" is not a positive size such as 80GiB, 80GB or 512MiB"));
  }
  const std::string unit = absl::AsciiStrToLower(absl::StripAsciiWhitespace(t.substr(i)));
  static const std::pair<const char*, double> kUnits[] = {
      {"", 1},          {"b", 1},        {"kb", 1e3},  {"mb", 1e6},  {"gb", 1e9},  {"tb", 1e12}, {"k", 1e3},
      {"m", 1e6},       {"g", 1e9},      {"t", 1e12},  {"kib", 1024.0}, {"mib", 1048576.0},
      {"gib", 1073741824.0}, {"tib", 1099511627776.0}, {"ki", 1024.0}, {"mi", 1048576.0},
      {"gi", 1073741824.0},  {"ti", 1099511627776.0}};
  for (const auto& [name, scale] : kUnits) {
    if (unit != name) continue;
    const double bytes = std::round(number * scale);
    if (bytes > static_cast<double>(int64_t{1} << 60)) return Bad(flag, absl::StrCat("\"", text, "\" is too large"));
    return static_cast<int64_t>(bytes);
  }
  return Bad(flag, absl::StrCat("\"", text, "\": unknown unit \"", unit,
                                "\" (B, KB, MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024)"));
}

absl::StatusOr<double> ParseBandwidth(const std::string& flag, const std::string& text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  if (!absl::ConsumeSuffix(&t, "/s") && !absl::ConsumeSuffix(&t, "/S")) {
    return Bad(flag, absl::StrCat("\"", text, "\" is not a bandwidth such as 3.35TB/s or 900GB/s"));
  }
  auto bytes = ParseByteSize(flag, std::string(t));
  if (!bytes.ok()) {
    return Bad(flag, absl::StrCat("\"", text, "\" is not a bandwidth such as 3.35TB/s or 900GB/s"));
  }
  return static_cast<double>(*bytes);
}

std::string FormatBytes(int64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f GB (%.2f GiB)", bytes / 1e9, bytes / 1073741824.0);
  return buf;
}

int64_t LinearParamsPerLayer(const model::LlamaConfig& c) {
  return c.hidden_size * c.q_size() * 2 + c.hidden_size * c.kv_size() * 2 + 3 * c.hidden_size * c.intermediate_size;
}

}  // namespace strata::tools
