// strata-router: the public gRPC API, the scheduler and the fleet. Workers
// register with it (--router on strata-worker). SIGTERM or SIGINT drains:
// new requests get UNAVAILABLE, running ones finish within --drain-ms, then
// it exits 0.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/signals.h"
#include "router/router_service.h"

namespace {

const char kUsage[] =
    "usage: strata-router [--host ADDR] [--port P] [--data-port P] [--metrics-port P] [--model-name NAME]\n"
    "         [--max-queue N] [--max-tokens-limit N] [--max-tokens-per-step N] [--max-seqs-per-step N]\n"
    "         [--heartbeat-ms MS] [--down-after-ms MS] [--step-timeout-ms MS] [--drain-ms MS]\n"
    "         [--ucx-peer-errors true|false] [--ready-file PATH] [--tokenizer DIR]\n";

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> v;
  const std::vector<std::string> known = {"host", "port", "data-port", "metrics-port", "model-name", "max-queue",
                                          "max-tokens-limit", "max-tokens-per-step", "max-seqs-per-step",
                                          "heartbeat-ms", "down-after-ms", "step-timeout-ms", "drain-ms",
                                          "ucx-peer-errors", "ready-file", "tokenizer"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (a.rfind("--", 0) != 0) {
      std::cerr << "strata-router: unexpected argument \"" << a << "\"\n" << kUsage;
      return 2;
    }
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      std::cerr << "strata-router: --" << name << " needs a value\n";
      return 2;
    }
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      std::cerr << "strata-router: unknown flag --" << name << "\n" << kUsage;
      return 2;
    }
    v[name] = value;
  }
  bool bad = false;
  auto get = [&](const std::string& name, int64_t fallback, int64_t lo, int64_t hi) -> int64_t {
    auto it = v.find(name);
    if (it == v.end()) return fallback;
    int64_t x = 0;
    if (!absl::SimpleAtoi(it->second, &x) || x < lo || x > hi) {
      std::cerr << "strata-router: --" << name << ": \"" << it->second << "\" is not an integer in [" << lo << ", "
                << hi << "]\n";
      bad = true;
    }
    return x;
  };
  strata::router::RouterOptions o;
  o.host = v.count("host") ? v["host"] : "127.0.0.1";
  o.port = static_cast<int>(get("port", 0, 0, 65535));
  o.metrics_port = static_cast<int>(get("metrics-port", -1, -1, 65535));
  o.model_name = v.count("model-name") ? v["model-name"] : "llama";
  if (v.count("tokenizer")) o.tokenizer_dir = v["tokenizer"];
  o.engine.data_port = static_cast<int>(get("data-port", 0, 0, 65535));
  o.engine.max_queue = get("max-queue", 256, 1, 1 << 20);
  o.engine.max_tokens_limit = static_cast<int32_t>(get("max-tokens-limit", 4096, 1, 1 << 20));
  o.engine.scheduler.max_tokens_per_step = get("max-tokens-per-step", 256, 1, 1 << 16);
  o.engine.scheduler.max_seqs_per_step = get("max-seqs-per-step", 64, 1, 4096);
  o.engine.heartbeat = std::chrono::milliseconds(get("heartbeat-ms", 1000, 50, 600000));
  o.engine.down_after = std::chrono::milliseconds(get("down-after-ms", 5000, 100, 3600000));
  o.engine.step_timeout = std::chrono::milliseconds(get("step-timeout-ms", 30000, 100, 3600000));
  const int64_t drain_ms = get("drain-ms", 30000, 0, 3600000);
  if (v.count("ucx-peer-errors")) {
    if (v["ucx-peer-errors"] != "true" && v["ucx-peer-errors"] != "false") {
      std::cerr << "strata-router: --ucx-peer-errors must be true or false\n";
      bad = true;
    }
    o.engine.ucx_peer_errors = v["ucx-peer-errors"] == "true";
  }
  if (bad) return 2;

  strata::base::BlockStopSignals();

  auto server = strata::router::RouterServer::Start(o);
  if (!server.ok()) {
    std::cerr << "strata-router: " << server.status() << "\n";
    return 1;
  }
  std::cerr << "strata-router: serving on " << (*server)->address() << ", data plane " << (*server)->data_address()
            << ((*server)->metrics_address().empty() ? "" : ", metrics " + (*server)->metrics_address()) << std::endl;
  if (v.count("ready-file")) {
    const std::string tmp = v["ready-file"] + ".tmp";
    std::ofstream(tmp) << "{\"address\": \"" << (*server)->address() << "\", \"data_address\": \""
                       << (*server)->data_address() << "\", \"metrics_address\": \"" << (*server)->metrics_address()
                       << "\"}\n";
    std::rename(tmp.c_str(), v["ready-file"].c_str());
  }
  strata::base::DrainOnStopSignal("strata-router", [&] { (*server)->Drain(std::chrono::milliseconds(drain_ms)); });
  (*server)->Wait();
  return 0;
}
