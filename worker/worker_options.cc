#include "worker/worker_options.h"

#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "transport/address.h"

namespace strata::worker {
namespace {

const char* const kNames[] = {"config",      "model",          "model-name",  "pipeline",     "stage",
                              "num-stages",  "layers",         "tp-rank",     "tp-size",      "tp-store",
                              "backend",     "threads",        "isa",         "kv-dtype",     "host",
                              "data-port",   "control-port",   "metrics-port", "next-stage",  "result-address",
                              "router",      "block-size",     "kv-blocks",   "kv-memory-mb", "ucx-peer-errors",
                              "step-timeout-ms", "ready-file"};

bool Known(const std::string& name) {
  for (const char* n : kNames) {
    if (name == n) return true;
  }
  return false;
}

absl::Status Bad(const std::string& name, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", why));
}

}  // namespace

std::string WorkerUsage() {
  return "usage: strata-worker --model DIR [--stage S --num-stages N] [--layers FIRST:LAST]\n"
         "         [--tp-rank R --tp-size T --tp-store HOST:PORT] [--backend cpu|reference|cuda]\n"
         "         [--threads N] [--isa auto|avx512bf16|avx512|avx2|portable] [--kv-dtype bf16|f32]\n"
         "         [--host ADDR] [--data-port P] [--control-port P] [--metrics-port P]\n"
         "         [--next-stage HOST:PORT] [--result-address HOST:PORT] [--router HOST:PORT]\n"
         "         [--block-size N] [--kv-blocks N | --kv-memory-mb MB] [--pipeline NAME]\n"
         "         [--ucx-peer-errors true|false] [--step-timeout-ms MS] [--ready-file PATH]\n"
         "         [--config FILE.json]\n";
}

absl::StatusOr<WorkerOptions> ParseWorkerOptions(const std::vector<std::string>& args) {
  std::map<std::string, std::string> v;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", a, "\""));
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else {
      if (i + 1 >= args.size()) return Bad(name, "needs a value");
      value = args[++i];
    }
    if (!Known(name)) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    v[name] = value;
  }
  if (v.count("config")) {
    std::ifstream in(v["config"]);
    if (!in) return Bad("config", absl::StrCat("cannot read ", v["config"]));
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return Bad("config", absl::StrCat(v["config"], " is not a JSON object"));
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!Known(it.key()) || it.key() == "config") {
        return Bad("config", absl::StrCat(v["config"], ": unknown key \"", it.key(), "\""));
      }
      if (v.count(it.key())) continue;  // the command line wins
      if (it->is_string()) {
        v[it.key()] = it->get<std::string>();
      } else if (it->is_number_integer() || it->is_boolean()) {
        v[it.key()] = it->dump();
      } else {
        return Bad(it.key(), absl::StrCat("in ", v["config"], " must be a string, integer or boolean"));
      }
    }
  }
  WorkerOptions o;
  auto get_int = [&](const std::string& name, int64_t lo, int64_t hi, auto* out) -> absl::Status {
    auto it = v.find(name);
    if (it == v.end()) return absl::OkStatus();
    int64_t x = 0;
    if (!absl::SimpleAtoi(it->second, &x) || x < lo || x > hi) {
      return Bad(name, absl::StrCat("\"", it->second, "\" is not an integer in [", lo, ", ", hi, "]"));
    }
    *out = static_cast<std::remove_pointer_t<decltype(out)>>(x);
    return absl::OkStatus();
  };
  auto get_addr = [&](const std::string& name, std::string* out) -> absl::Status {
    auto it = v.find(name);
    if (it == v.end()) return absl::OkStatus();
    auto hp = transport::ParseHostPort(it->second, "--" + name);
    if (!hp.ok()) return hp.status();
    *out = it->second;
    return absl::OkStatus();
  };
  if (!v.count("model")) return Bad("model", "is required (a Hugging Face model folder)");
  o.model_dir = v["model"];
  o.model_name = v.count("model-name") ? v["model-name"] : "";
  if (o.model_name.empty()) {
    std::string d = o.model_dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    o.model_name = d.substr(d.rfind('/') == std::string::npos ? 0 : d.rfind('/') + 1);
  }
  if (v.count("pipeline")) o.pipeline = v["pipeline"];
  if (o.pipeline.empty()) return Bad("pipeline", "must not be empty");
  for (auto s : {get_int("num-stages", 1, 1024, &o.num_stages), get_int("stage", 0, 1023, &o.stage),
                 get_int("tp-size", 1, 64, &o.tp_size), get_int("tp-rank", 0, 63, &o.tp_rank),
                 get_int("threads", 1, 1024, &o.backend.threads), get_int("data-port", 0, 65535, &o.data_port),
                 get_int("control-port", 0, 65535, &o.control_port),
                 get_int("metrics-port", -1, 65535, &o.metrics_port),
                 get_int("block-size", 1, 4096, &o.block_size), get_int("kv-blocks", 0, int64_t{1} << 31, &o.kv_blocks),
                 get_int("kv-memory-mb", 1, int64_t{1} << 24, &o.kv_memory_mb),
                 get_int("step-timeout-ms", 100, 3600000, &o.step_timeout_ms),
                 get_addr("tp-store", &o.tp_store), get_addr("next-stage", &o.next_stage),
                 get_addr("result-address", &o.result_address), get_addr("router", &o.router)}) {
    if (!s.ok()) return s;
  }
  if (o.stage >= o.num_stages) return Bad("stage", absl::StrCat(o.stage, " is not below --num-stages ", o.num_stages));
  if (o.tp_rank >= o.tp_size) return Bad("tp-rank", absl::StrCat(o.tp_rank, " is not below --tp-size ", o.tp_size));
  if (o.tp_size > 1 && o.tp_store.empty()) return Bad("tp-store", "is required when --tp-size > 1");
  if (o.stage + 1 < o.num_stages && o.next_stage.empty()) {
    return Bad("next-stage", "is required on every stage but the last");
  }
  if (v.count("layers")) {
    const std::string& l = v["layers"];
    const size_t colon = l.find(':');
    if (colon == std::string::npos || !absl::SimpleAtoi(l.substr(0, colon), &o.first_layer) ||
        !absl::SimpleAtoi(l.substr(colon + 1), &o.last_layer) || o.first_layer < 0 ||
        o.last_layer <= o.first_layer) {
      return Bad("layers", absl::StrCat("\"", l, "\" is not FIRST:LAST with 0 <= FIRST < LAST"));
    }
  }
  if (v.count("backend")) o.backend.name = v["backend"];
  if (v.count("isa")) o.backend.isa = v["isa"];
  if (v.count("kv-dtype")) o.backend.kv_dtype = v["kv-dtype"];
  if (v.count("host")) o.host = v["host"];
  if (o.host.empty()) return Bad("host", "must not be empty");
  if (v.count("ucx-peer-errors")) {
    const std::string& b = v["ucx-peer-errors"];
    if (b != "true" && b != "false") return Bad("ucx-peer-errors", "must be true or false");
    o.ucx_peer_errors = b == "true";
  }
  if (v.count("ready-file")) o.ready_file = v["ready-file"];
  return o;
}

}  // namespace strata::worker
