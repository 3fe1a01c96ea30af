// strata-router: the public gRPC API, the scheduler and the fleet. Workers
// register with it (--router on strata-worker). SIGTERM or SIGINT drains:
// new requests get UNAVAILABLE, running ones finish within --drain-ms, then
// it exits 0. `--help` prints the flags from the table below.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "base/flag_groups.h"
#include "base/flags.h"
#include "base/signals.h"
#include "router/router_server.h"

namespace {

using strata::base::IntFlag;
using strata::base::StringFlag;

const strata::base::FlagTable& RouterFlags() {
  static const strata::base::FlagTable* table = new strata::base::FlagTable(
      "strata-router [flags]",
      "The public gRPC API (strata.v1.Inference), the scheduler, the pipeline driver and the fleet that\n"
      "workers register with. SIGTERM or SIGINT drains, then exits 0.",
      {{"router",
        {StringFlag("host", "127.0.0.1", "ADDR", "the address to serve on"),
         IntFlag("port", 0, 0, 65535, "gRPC port of the public API, health and reflection (0: any)"),
         IntFlag("fleet-port", 0, 0, 65535,
                 "gRPC port of the Fleet service workers register with (0: any); never the public port"),
         strata::base::MetricsPortFlag(),
         strata::base::HttpPortFlag(),
         StringFlag("model-name", "llama", "NAME", "the model's label in metrics"),
         StringFlag("tokenizer", std::nullopt, "DIR",
                    "a folder with tokenizer.json or tokenizer.model (default: token ids only)"),
         StringFlag("ready-file", std::nullopt, "PATH", "written with the addresses once serving")}},
       strata::base::RouterEngineFlags(),
       strata::base::DataPlaneFlags(),
       strata::base::PublicApiSecurityFlags(),
       strata::base::ControlTlsFlags()});
  return *table;
}

strata::router::RouterOptions OptionsFrom(const strata::base::ParsedFlags& f) {
  strata::router::RouterOptions o;
  o.host = f.String("host");
  o.port = static_cast<int>(f.Int("port"));
  o.fleet_port = static_cast<int>(f.Int("fleet-port"));
  o.metrics_port = static_cast<int>(f.Int("metrics-port"));
  o.http_port = static_cast<int>(f.Int("http-port"));
  o.model_name = f.String("model-name");
  o.tokenizer_dir = f.String("tokenizer");
  o.engine.data_port = static_cast<int>(f.Int("data-port"));
  o.engine.ucx_peer_errors = f.Bool("ucx-peer-errors");
  o.engine.max_queue = f.Int("max-queue");
  o.engine.max_tokens_limit = static_cast<int32_t>(f.Int("max-tokens-limit"));
  o.engine.scheduler.max_tokens_per_step = f.Int("max-tokens-per-step");
  o.engine.scheduler.max_seqs_per_step = f.Int("max-seqs-per-step");
  o.engine.scheduler.prefix_caching = f.Bool("prefix-caching");
  o.engine.heartbeat = std::chrono::milliseconds(f.Int("heartbeat-ms"));
  o.engine.down_after = std::chrono::milliseconds(f.Int("down-after-ms"));
  o.engine.step_timeout = std::chrono::milliseconds(f.Int("step-timeout-ms"));
  o.engine.max_migrations = static_cast<int32_t>(f.Int("max-migrations"));
  o.public_tls = {f.String("tls-client-ca"), f.String("tls-cert"), f.String("tls-key")};
  o.auth_tokens = f.String("auth-tokens");
  o.auth_health = f.Bool("auth-health");
  o.control_tls = {f.String("mtls-ca"), f.String("mtls-cert"), f.String("mtls-key")};
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (strata::base::WantsHelp(args)) {
    std::cout << RouterFlags().Help();
    return 0;
  }
  const auto flags = RouterFlags().Parse(args);
  if (!flags.ok()) {
    std::cerr << "strata-router: " << flags.status().message() << " (strata-router --help lists the flags)\n";
    return 2;
  }
  strata::base::BlockStopSignals();

  auto server = strata::router::RouterServer::Start(OptionsFrom(*flags));
  if (!server.ok()) {
    std::cerr << "strata-router: " << server.status() << "\n";
    return 1;
  }
  std::cerr << "strata-router: serving on " << (*server)->address() << ", fleet " << (*server)->fleet_address()
            << ", data plane " << (*server)->data_address()
            << ((*server)->metrics_address().empty() ? "" : ", metrics " + (*server)->metrics_address())
            << ((*server)->http_address().empty() ? "" : ", HTTP API " + (*server)->http_address()) << std::endl;
  if (const std::string& ready = flags->String("ready-file"); !ready.empty()) {
    const std::string tmp = ready + ".tmp";
    std::ofstream(tmp) << "{\"address\": \"" << (*server)->address() << "\", \"data_address\": \""
                       << (*server)->data_address() << "\", \"metrics_address\": \"" << (*server)->metrics_address()
                       << "\", \"http_address\": \"" << (*server)->http_address()
                       << "\", \"fleet_address\": \"" << (*server)->fleet_address() << "\"}\n";
    std::rename(tmp.c_str(), ready.c_str());
  }
  const std::chrono::milliseconds drain(flags->Int("drain-ms"));
  strata::base::DrainOnStopSignal("strata-router", [&server, drain] { (*server)->Drain(drain); });
  strata::base::ReloadOnHangup("strata-router", [&server] {
    if (absl::Status s = (*server)->ReloadTokens(); !s.ok()) {
      std::cerr << "strata-router: kept the current tokens: " << s.message() << std::endl;
    } else {
      std::cerr << "strata-router: tokens reloaded" << std::endl;
    }
  });
  (*server)->Wait();
  return 0;
}
