#include "tools/plan_command.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/flag_groups.h"
#include "base/status_macros.h"
#include "tools/plan_launch.h"

namespace strata::tools {
namespace {

using base::BoolFlag;
using base::ChoiceFlag;
using base::DoubleFlag;
using base::IntFlag;
using base::StringFlag;
using Json = nlohmann::ordered_json;

absl::Status Bad(const std::string& flag, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", why));
}

absl::StatusOr<model::LlamaConfig> ReadModelConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream in(path);
  if (!in) return Bad("model", absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<model::LlamaConfig> c = model::ParseLlamaConfig(text.str());
  if (!c.ok()) return Bad("model", absl::StrCat(path, ": ", c.status().message()));
  return c;
}

std::string Gb(int64_t bytes) { return FormatBytes(bytes); }

void PrintPlan(const Plan& p, const PlanRequest& r) {
  const char* dev = r.device == PlanDevice::kGpu ? "GPU" : "host";
  std::printf("model: %s, %.2f B parameters, weights in %s (%s), KV cache in bf16 (%.3f MiB per token)\n",
              r.model_label.c_str(), r.model.ParameterCount() / 1e9, r.dtype == WeightDtype::kFp8 ? "fp8" : "bf16",
              Gb(p.model_weight_bytes).c_str(), p.kv_bytes_per_token / 1048576.0);
  std::printf("devices: %lld %s%s of %s%s, %.0f%% of each reserved for activations and runtime\n",
              static_cast<long long>(r.devices), dev, r.devices > 1 ? "s" : "", Gb(r.memory_bytes).c_str(),
              r.device == PlanDevice::kGpu ? absl::StrCat(", ", r.devices_per_node, " per node").c_str() : "",
              r.reserve_fraction * 100);
  if (!p.fits) {
    std::printf("does not fit: %s\n", p.reason.c_str());
    return;
  }
  std::printf("plan: TP %lld x PP %lld = %lld %s%s per replica, %lld replica%s", static_cast<long long>(p.tp),
              static_cast<long long>(p.pp), static_cast<long long>(p.devices_per_replica), dev,
              p.devices_per_replica > 1 ? "s" : "", static_cast<long long>(p.replicas), p.replicas > 1 ? "s" : "");
  if (p.unused_devices > 0) std::printf(" (%lld %ss unused)", static_cast<long long>(p.unused_devices), dev);
  std::printf("\n");
  for (size_t s = 0; s < p.stages.size(); ++s) {
    const StagePlanEntry& e = p.stages[s];
    std::string extra;
    if (e.has_embedding) extra += " + embedding";
    if (e.has_lm_head) extra += " + norm, lm_head";
    std::printf("  stage %zu: layers [%lld, %lld) (%lld)%s: weights %s per %s, KV %s\n", s,
                static_cast<long long>(e.first_layer), static_cast<long long>(e.last_layer),
                static_cast<long long>(e.layers()), extra.c_str(), Gb(e.weight_bytes_per_device).c_str(), dev,
                Gb(e.kv_bytes_per_device).c_str());
  }
  std::printf("weights per %s: %s (the fullest); left for activations and KV: %s, of which %s reserved\n", dev,
              Gb(p.weight_bytes_per_device).c_str(), Gb(p.free_bytes_per_device).c_str(),
              Gb(p.reserve_bytes_per_device).c_str());
  std::printf("KV cache: %lld blocks of %lld tokens per worker = %lld tokens per pipeline\n",
              static_cast<long long>(p.kv_blocks_per_worker), static_cast<long long>(r.block_size),
              static_cast<long long>(p.kv_tokens_per_pipeline));
  std::printf("concurrent sequences per pipeline: %lld of 8K tokens, %lld of 128K tokens (x %lld replica%s)\n",
              static_cast<long long>(p.concurrent_8k), static_cast<long long>(p.concurrent_128k),
              static_cast<long long>(p.replicas), p.replicas > 1 ? "s" : "");
  std::printf("decode roofline, one stream at %.2f TB/s per %s: %.1f tokens/s (%.1f at %lld tokens of context)\n",
              r.bandwidth_bytes_per_s / 1e12, dev, p.decode_tokens_per_s, p.decode_tokens_per_s_at_context,
              static_cast<long long>(r.context));
}

LaunchOptions LaunchOptionsFromFlags(const base::ParsedFlags& f) {
  LaunchOptions o;
  o.model_path = f.String("model-path");
  o.model_name = f.String("model-name");
  if (f.HasValue("node-hosts")) {
    o.node_hosts = absl::StrSplit(f.String("node-hosts"), ',', absl::SkipEmpty());
  }
  o.cpu_threads = f.Int("threads");
  o.image = f.String("image");
  o.model_pvc = f.String("model-pvc");
  o.gpu_resource = f.String("gpu-resource");
  o.rdma_resource = f.String("rdma-resource");
  o.drain_ms = f.Int("drain-ms");
  o.tls = f.Bool("tls");
  return o;
}

absl::Status WriteLaunchFiles(const std::string& dir, const Plan& p, const PlanRequest& r, const LaunchOptions& o,
                              const std::string& generated_by) {
  std::vector<LaunchFile> files = LaunchFiles(p, r, o, generated_by);
  files.push_back({"plan.json", PlanToJson(p, r).dump(2) + "\n"});
  for (const LaunchFile& file : files) {
    const std::filesystem::path path = std::filesystem::path(dir) / file.path;
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << file.text;
    if (!out) return Bad("out", absl::StrCat("cannot write ", path.string()));
  }
  std::fprintf(stderr, "wrote %zu files under %s: plan.json, systemd/HOST/ (worker configs, router.env), "
               "k8s/strata-lws.yaml, k8s/strata-statefulsets.yaml\n", files.size(), dir.c_str());
  return absl::OkStatus();
}

}  // namespace

const base::FlagTable& PlanFlags() {
  static const base::FlagTable* table = new base::FlagTable(
      "strata plan (--model DIR | --preset NAME) (--gpus N --gpu-memory SIZE | --cpu-hosts N --host-memory SIZE) [flags]",
      "Plans a deployment: TP and PP degrees, layers per stage, memory per GPU, KV capacity and the decode\n"
      "roofline, or why the model does not fit (exit status 1). --out DIR writes the worker configs and\n"
      "Kubernetes manifests of the plan. Policy: the smallest replica that holds the weights and one\n"
      "--context sequence after the --reserve; TP inside a node before PP (docs/operations.md).",
      {{"model",
        {StringFlag("model", std::nullopt, "DIR", "a Hugging Face model folder (its config.json)"),
         StringFlag("preset", std::nullopt, "NAME", "a known shape instead of --model: tiny, 1b, 8b, 70b or 405b"),
         ChoiceFlag("dtype", "bf16", {"bf16", "fp8"}, "weights (fp8: the decoder projections; embeddings, norms bf16)"),
         IntFlag("context", std::nullopt, 1, 1 << 24, "tokens one sequence must fit (default: the model's maximum)")}},
       {"devices",
        {IntFlag("gpus", std::nullopt, 1, 1 << 20, "GPUs in all"),
         StringFlag("gpu-memory", std::nullopt, "SIZE", "memory of one GPU: 80GiB, 141GB, ..."),
         IntFlag("gpus-per-node", 8, 1, 64, "GPUs per node (tensor parallelism stays inside one)"),
         StringFlag("gpu-bandwidth", "3.35TB/s", "RATE", "memory bandwidth of one GPU (H100 SXM: 3.35TB/s)"),
         IntFlag("cpu-hosts", std::nullopt, 1, 1 << 20, "CPU hosts instead of GPUs (one worker per host)"),
         StringFlag("host-memory", std::nullopt, "SIZE", "memory of one CPU host"),
         StringFlag("host-bandwidth", "200GB/s", "RATE", "memory bandwidth of one CPU host"),
         DoubleFlag("reserve", 0.10, "fraction of each device's memory kept for activations and runtime", 0, 0.9),
         base::BlockSizeFlag()}},
       {"output",
        {BoolFlag("json", false, "print the plan as one JSON object"),
         StringFlag("out", std::nullopt, "DIR", "write plan.json, systemd worker configs and Kubernetes manifests")}},
       {"launch settings (with --out)",
        {StringFlag("model-path", "/models/model", "DIR", "the model folder on every host and in every pod"),
         StringFlag("model-name", "llama", "NAME", "the model's name at the router and in metrics"),
         StringFlag("node-hosts", std::nullopt, "H1,H2", "systemd: the nodes' addresses (default node-0,node-1,...)"),
         IntFlag("threads", 0, 0, 1024, "CPU hosts: each worker's --threads (0: the worker's default)"),
         StringFlag("image", "strata:latest", "IMAGE", "Kubernetes: the container image"),
         StringFlag("model-pvc", "strata-model", "NAME", "Kubernetes: the claim holding the model folder"),
         StringFlag("gpu-resource", "nvidia.com/gpu", "NAME", "Kubernetes: the GPU resource name"),
         StringFlag("rdma-resource", "rdma/rdma_shared_device_a", "NAME",
                    "Kubernetes: the RDMA NIC resource (\"\": none, UCX over TCP)"),
         IntFlag("drain-ms", 30000, 0, 3600000, "the router's --drain-ms; pods get this plus 15 s to stop"),
         BoolFlag("tls", false,
                  "TLS and bearer tokens on the public port, mutual TLS on the control plane, from the strata-tls\n"
                  "and strata-tokens Secrets (/etc/strata/tls/{ca.crt,tls.crt,tls.key}, /etc/strata/tokens/tokens.json)")}}});
  return *table;
}

absl::StatusOr<PlanRequest> PlanRequestFromFlags(const base::ParsedFlags& f) {
  PlanRequest r;
  const bool by_dir = f.HasValue("model"), by_preset = f.HasValue("preset");
  if (by_dir == by_preset) return Bad("model", "give exactly one of --model DIR and --preset NAME");
  if (by_dir) {
    STRATA_ASSIGN_OR_RETURN(r.model, ReadModelConfig(f.String("model")));
    std::string d = f.String("model");
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    r.model_label = d.substr(d.rfind('/') == std::string::npos ? 0 : d.rfind('/') + 1);
  } else {
    absl::StatusOr<model::LlamaConfig> preset = model::LlamaPreset(f.String("preset"));
    if (!preset.ok()) return Bad("preset", std::string(preset.status().message()));
    r.model = *preset;
    r.model_label = f.String("preset");
  }
  const bool gpu = f.HasValue("gpus") || f.HasValue("gpu-memory");
  const bool cpu = f.HasValue("cpu-hosts") || f.HasValue("host-memory");
  if (gpu == cpu) return Bad("gpus", "give --gpus N --gpu-memory SIZE, or --cpu-hosts N --host-memory SIZE");
  if (gpu) {
    if (!f.HasValue("gpus")) return Bad("gpus", "is required with --gpu-memory");
    if (!f.HasValue("gpu-memory")) return Bad("gpu-memory", "is required with --gpus");
    r.device = PlanDevice::kGpu;
    r.devices = f.Int("gpus");
    STRATA_ASSIGN_OR_RETURN(r.memory_bytes, ParseByteSize("gpu-memory", f.String("gpu-memory")));
    r.devices_per_node = f.Int("gpus-per-node");
    STRATA_ASSIGN_OR_RETURN(r.bandwidth_bytes_per_s, ParseBandwidth("gpu-bandwidth", f.String("gpu-bandwidth")));
    if (f.IsSet("host-bandwidth")) return Bad("host-bandwidth", "is for --cpu-hosts; GPUs take --gpu-bandwidth");
    if (f.IsSet("threads")) return Bad("threads", "is for --cpu-hosts");
  } else {
    if (!f.HasValue("cpu-hosts")) return Bad("cpu-hosts", "is required with --host-memory");
    if (!f.HasValue("host-memory")) return Bad("host-memory", "is required with --cpu-hosts");
    for (const char* g : {"gpus-per-node", "gpu-bandwidth", "gpu-resource", "rdma-resource"}) {
      if (f.IsSet(g)) return Bad(g, "is for --gpus; CPU hosts are one worker each");
    }
    r.device = PlanDevice::kCpuHost;
    r.devices = f.Int("cpu-hosts");
    STRATA_ASSIGN_OR_RETURN(r.memory_bytes, ParseByteSize("host-memory", f.String("host-memory")));
    r.devices_per_node = 1;
    STRATA_ASSIGN_OR_RETURN(r.bandwidth_bytes_per_s, ParseBandwidth("host-bandwidth", f.String("host-bandwidth")));
  }
  r.dtype = f.String("dtype") == "fp8" ? WeightDtype::kFp8 : WeightDtype::kBf16;
  r.context = f.HasValue("context") ? f.Int("context") : r.model.max_position_embeddings;
  r.reserve_fraction = f.Double("reserve");
  r.block_size = f.Int("block-size");
  if (f.HasValue("node-hosts")) {
    for (absl::string_view h : absl::StrSplit(f.String("node-hosts"), ',')) {
      if (h.empty()) return Bad("node-hosts", absl::StrCat("\"", f.String("node-hosts"), "\" has an empty name"));
    }
  }
  for (const char* name : {"model-path", "model-name", "image", "model-pvc", "gpu-resource"}) {
    if (f.String(name).empty()) return Bad(name, "must not be empty");
  }
  if (f.String("model-path")[0] != '/') return Bad("model-path", absl::StrCat("\"", f.String("model-path"), "\" is not absolute"));
  return r;
}

Json PlanToJson(const Plan& p, const PlanRequest& r) {
  Json stages = Json::array();
  for (const StagePlanEntry& e : p.stages) {
    stages.push_back({{"first_layer", e.first_layer},
                      {"last_layer", e.last_layer},
                      {"embedding", e.has_embedding},
                      {"lm_head", e.has_lm_head},
                      {"weight_bytes_per_gpu", e.weight_bytes_per_device},
                      {"kv_bytes_per_gpu", e.kv_bytes_per_device}});
  }
  Json j = {{"fits", p.fits},
            {"model", r.model_label},
            {"dtype", r.dtype == WeightDtype::kFp8 ? "fp8" : "bf16"},
            {"device", r.device == PlanDevice::kGpu ? "gpu" : "cpu"},
            {"devices", r.devices},
            {"memory_bytes_per_device", r.memory_bytes},
            {"devices_per_node", r.devices_per_node},
            {"context", r.context},
            {"reserve_fraction", r.reserve_fraction},
            {"tp", p.tp},
            {"pp", p.pp},
            {"gpus_per_replica", p.devices_per_replica},
            {"replicas", p.replicas},
            {"unused_gpus", p.unused_devices},
            {"layers_per_stage", p.layers_per_stage()},
            {"stages", stages},
            {"model_weight_bytes", p.model_weight_bytes},
            {"weight_bytes_per_gpu", p.weight_bytes_per_device},
            {"reserve_bytes_per_gpu", p.reserve_bytes_per_device},
            {"free_bytes_per_gpu", p.free_bytes_per_device},
            {"kv_bytes_per_token", p.kv_bytes_per_token},
            {"block_size", r.block_size},
            {"kv_blocks_per_worker", p.kv_blocks_per_worker},
            {"kv_tokens_per_pipeline", p.kv_tokens_per_pipeline},
            {"concurrent_sequences_8k", p.concurrent_8k},
            {"concurrent_sequences_128k", p.concurrent_128k},
            {"bandwidth_bytes_per_s", r.bandwidth_bytes_per_s},
            {"decode_tokens_per_s", p.decode_tokens_per_s},
            {"decode_tokens_per_s_at_context", p.decode_tokens_per_s_at_context}};
  if (!p.fits) {
    j["reason"] = p.reason;
    j["needs_gpus"] = p.needs_devices;
  }
  return j;
}

absl::Status PlanCommand(const base::ParsedFlags& f) {
  STRATA_ASSIGN_OR_RETURN(const PlanRequest r, PlanRequestFromFlags(f));
  STRATA_ASSIGN_OR_RETURN(const Plan p, MakePlan(r));
  if (f.Bool("json")) {
    std::cout << PlanToJson(p, r).dump() << std::endl;
  } else {
    PrintPlan(p, r);
  }
  if (!p.fits) return absl::FailedPreconditionError(absl::StrCat("does not fit: ", p.reason));
  if (f.HasValue("out")) {
    std::string how = "strata plan";
    if (f.HasValue("model")) absl::StrAppend(&how, " --model ", f.String("model"));
    else absl::StrAppend(&how, " --preset ", r.model_label);
    if (r.device == PlanDevice::kGpu) {
      absl::StrAppend(&how, " --gpus ", r.devices, " --gpu-memory ", f.String("gpu-memory"), " --gpus-per-node ",
                      r.devices_per_node);
    } else {
      absl::StrAppend(&how, " --cpu-hosts ", r.devices, " --host-memory ", f.String("host-memory"));
    }
    absl::StrAppend(&how, " --dtype ", f.String("dtype"));
    if (f.HasValue("context")) absl::StrAppend(&how, " --context ", r.context);
    if (f.Bool("tls")) absl::StrAppend(&how, " --tls");
    STRATA_RETURN_IF_ERROR(WriteLaunchFiles(f.String("out"), p, r, LaunchOptionsFromFlags(f), how));
  }
  return absl::OkStatus();
}

}  // namespace strata::tools
