#include "tools/cluster.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/flag_groups.h"
#include "base/local_pki.h"
#include "base/net.h"
#include "base/process.h"
#include "base/signals.h"
#include "base/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "model/checkpoint.h"
#include "model/file_system.h"
#include "model/make_model.h"
#include "model/stage_place.h"
#include "nlohmann/json.hpp"
#include "strata/v1/inference.grpc.pb.h"
#include "testdata/grpc_health.grpc.pb.h"
#include "tools/client_channel.h"
#include "tools/plan.h"
#include "worker/shard.h"

namespace strata::tools {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A worker that exits is started again after kFirstBackoff, doubling up
// to kMaxBackoff while it keeps failing; one that stayed up kStableFor
// starts from kFirstBackoff again.
constexpr milliseconds kFirstBackoff(500);
constexpr milliseconds kMaxBackoff(10000);
constexpr milliseconds kStableFor(30000);

// A child with the name strata up reports it by, and where it serves
// /metrics ("" when it does not).
struct Child {
  std::string name;
  base::Process process;
  std::string metrics_address;
  nlohmann::json place;  // a worker's pipeline, stage and tp_rank (the ready file's)
  // Supervision (workers only): when it last started, the wait before the
  // next restart, and when that restart is due once it has exited.
  Clock::time_point started = Clock::now();
  milliseconds backoff = kFirstBackoff;
  std::optional<Clock::time_point> restart_at;
  int restarts = 0;
};

// Each child is spawned from the thread that runs Up, which lives as long
// as strata up does: the children's PR_SET_PDEATHSIG follows the spawning
// thread (base/process.h), so restarts happen on that thread too.
absl::StatusOr<base::Process> SpawnProcess(std::vector<std::string> argv, const std::string& log,
                                           const std::vector<std::pair<std::string, std::string>>& env,
                                           bool append_log) {
  base::ProcessOptions o;
  o.argv = std::move(argv);
  o.log = log;
  o.append_log = append_log;
  o.env = env;
  o.new_process_group = true;  // Ctrl-C reaches strata up, which stops the children in order
  return base::Process::Spawn(std::move(o));
}

absl::StatusOr<Child> Spawn(const std::string& name, std::vector<std::string> argv, const std::string& log,
                            const std::vector<std::pair<std::string, std::string>>& env) {
  STRATA_ASSIGN_OR_RETURN(base::Process p, SpawnProcess(std::move(argv), log, env, /*append_log=*/false));
  return Child{name, std::move(p), "", nullptr};
}

void StopAll(std::vector<Child>::iterator begin, std::vector<Child>::iterator end, milliseconds grace) {
  std::vector<base::Process*> processes;
  for (auto it = begin; it != end; ++it) processes.push_back(&it->process);
  base::StopAll(processes, grace);
}

std::string DefaultBinDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string exe(buf, static_cast<size_t>(n));
  // bazel-bin/tools/strata -> bazel-bin
  exe = exe.substr(0, exe.rfind('/'));
  return exe.substr(0, exe.rfind('/'));
}

std::string CacheDir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x) return absl::StrCat(x, "/strata");
  if (const char* h = std::getenv("HOME"); h != nullptr && *h) return absl::StrCat(h, "/.cache/strata");
  return "/tmp/strata-cache";
}

// What strata up starts, where, and with what.
struct Layout {
  int64_t stages = 1, tp = 1, replicas = 1;
  std::vector<int64_t> begin_half;  // per stage in half layers (model/stage_place.h), and 2 x num_layers last
  int http_port = -1;     // the router's HTTP API (-1: off)
  int fleet_port = 0;     // the router's Fleet service, which the workers register with
  int metrics_port = -1;  // the router's /metrics (-1: off)
  bool shm = true;
  bool movable_boundaries = false;  // --movable-boundaries, passed to every worker
  std::string model, router_bin, worker_bin, logs;
  std::string tls;          // with --tls: the folder of the throwaway CA, certificates and token
  std::string auth_tokens;  // the router's --auth-tokens (--auth-tokens, or the throwaway one)
  std::string token_file;   // the token strata up itself calls the router with
  std::vector<std::pair<std::string, std::string>> env;
  // --router-host, --worker-hosts, --worker-netns: where each process
  // serves; worker_hosts and worker_netns have one entry per (replica,
  // stage), replica-major (empty: 127.0.0.1, this namespace).
  std::string router_host = "127.0.0.1";
  std::vector<std::string> worker_hosts, worker_netns;
  std::string ip_bin;  // iproute2's ip, with worker_netns

  std::string WorkerHost(int64_t replica, int64_t stage) const {
    return worker_hosts.empty() ? "127.0.0.1" : worker_hosts[replica * stages + stage];
  }
};

absl::StatusOr<std::string> ModelDir(const base::ParsedFlags& f) {
  if (f.IsSet("model")) return f.String("model");
  const std::string model = CacheDir() + "/tiny";
  if (!model::PosixFileSystem()->Exists(model + "/config.json")) {
    model::MakeModelOptions o;
    STRATA_ASSIGN_OR_RETURN(o.config, model::LlamaPreset("tiny"));
    std::cerr << "strata up: no --model; writing the tiny test model to " << model << "\n";
    STRATA_RETURN_IF_ERROR(model::WriteRandomModel(model::PosixFileSystem(), model, o));
  }
  return model;
}

// --tls: a CA and certificates for the router (its public ports and the
// control plane) and the workers, and, without --auth-tokens, one bearer
// token that may use every model, kept in LOG_DIR/tls/token.
absl::Status MakeThrowawaySecurity(Layout* l) {
  l->tls = l->logs + "/tls";
  STRATA_RETURN_IF_ERROR(base::MakeLocalPki(l->tls, "strata up throwaway CA",
                                            {{"router", "strata-router"}, {"worker", "strata-worker"}}));
  if (!l->auth_tokens.empty()) return absl::OkStatus();
  std::random_device rd;
  std::string token = "strata-";
  for (int i = 0; i < 32; ++i) token += "0123456789abcdef"[rd() % 16];
  l->auth_tokens = l->tls + "/tokens.json";
  {
    std::ofstream out(l->auth_tokens);
    out << nlohmann::json({{"tokens", {{{"name", "local"}, {"token", token}, {"models", {"*"}}, {"max_priority", 100}}}}})
               .dump(2)
        << "\n";
  }
  l->token_file = l->tls + "/token";
  std::ofstream(l->token_file) << token << "\n";
  chmod(l->auth_tokens.c_str(), 0600);
  chmod((l->tls + "/token").c_str(), 0600);
  return absl::OkStatus();
}

// Half layers per stage (model/stage_place.h): --layers, or balanced by
// what a decode step reads (every layer's projections; the lm_head on the
// last stage), since a pipeline runs at the pace of its slowest stage. An
// even split of Llama 3.2 1B over two stages gives the last 1.54x the
// first's work.
absl::StatusOr<std::vector<int64_t>> HalfLayerCounts(const base::ParsedFlags& f, int64_t stages,
                                                     const model::LlamaConfig& c) {
  std::vector<int64_t> halves;
  if (!f.IsSet("layers")) {
    const double layer = static_cast<double>(LinearParamsPerLayer(c));
    const double head = static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size);
    for (int64_t n : model::StagePlace::BalancedSplit(c.num_layers, static_cast<int32_t>(stages), layer, head)) {
      halves.push_back(2 * n);
    }
    return halves;
  }
  int64_t total = 0;
  for (absl::string_view part : absl::StrSplit(f.String("layers"), ',')) {
    absl::StatusOr<int64_t> n = model::ParseHalfLayer(std::string(part));
    if (!n.ok() || *n < 1 || *n > 2 * c.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("--layers: \"", part, "\" is not a layer count in [0.5, ",
                                                     c.num_layers, "] (N, or N.5 to end inside a layer, after its "
                                                     "attention)"));
    }
    halves.push_back(*n);
    total += *n;
  }
  if (static_cast<int64_t>(halves.size()) != stages || total != 2 * c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("--layers: ", halves.size(), " counts adding up to ",
                                                   model::HalfLayerString(total), "; --stages ", stages, " needs ",
                                                   stages, " counts adding up to the model's ", c.num_layers,
                                                   " layers"));
  }
  return halves;
}

absl::StatusOr<Layout> PlanLayout(const base::ParsedFlags& f) {
  Layout l;
  l.stages = f.Int("stages");
  l.tp = f.Int("tp");
  l.replicas = f.Int("replicas");
  l.fleet_port = base::PickFreePort();
  // The HTTP API's port is chosen here (0: a free one), so it can be printed.
  l.http_port = f.Int("http-port") == 0 ? base::PickFreePort() : static_cast<int>(f.Int("http-port"));
  l.metrics_port = f.Int("metrics-port") == 0 ? base::PickFreePort() : static_cast<int>(f.Int("metrics-port"));
  l.shm = f.String("transport") == "shm";
  l.env.push_back({"UCX_TLS", l.shm ? "sm,tcp,self" : "tcp,self"});
  STRATA_ASSIGN_OR_RETURN(l.model, ModelDir(f));
  STRATA_ASSIGN_OR_RETURN(auto ckpt, model::Checkpoint::Open(model::PosixFileSystem(), l.model));
  if (l.stages > ckpt->config().num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("--stages ", l.stages, " is more than the model's ",
                                                   ckpt->config().num_layers, " layers"));
  }
  STRATA_ASSIGN_OR_RETURN(const std::vector<int64_t> counts, HalfLayerCounts(f, l.stages, ckpt->config()));
  l.begin_half = {0};
  for (int64_t n : counts) l.begin_half.push_back(l.begin_half.back() + n);
  // Every worker's place, checked before any process starts (the workers
  // are given the same layers).
  for (int32_t s = 0; s < l.stages; ++s) {
    auto place = model::StagePlace::CreateHalves(s, static_cast<int32_t>(l.stages), 0, static_cast<int32_t>(l.tp),
                                                 ckpt->config().num_layers, l.begin_half[s], l.begin_half[s + 1]);
    if (!place.ok()) return absl::InvalidArgumentError(absl::StrCat("--stages / --tp: ", place.status().message()));
  }
  l.movable_boundaries = f.Bool("movable-boundaries");
  if (l.movable_boundaries) {
    if (l.stages < 2) {
      return absl::InvalidArgumentError("--movable-boundaries needs --stages 2 or more: one stage has no boundary");
    }
    // With every boundary moved, each stage must still keep a half layer.
    for (int32_t s = 0; s < l.stages; ++s) {
      const int64_t b = s == 0 ? 0 : model::ShiftedHalf(l.begin_half[s]);
      const int64_t e = s + 1 == l.stages ? l.begin_half[s + 1] : model::ShiftedHalf(l.begin_half[s + 1]);
      if (e <= b) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--movable-boundaries: stage ", s, " (layers ", model::HalfLayerString(l.begin_half[s]), ":",
            model::HalfLayerString(l.begin_half[s + 1]), ") would hold nothing with its boundaries moved (",
            model::HalfLayerString(b), ":", model::HalfLayerString(e), "); give it more layers"));
      }
    }
  }
  STRATA_RETURN_IF_ERROR(worker::ValidateTp(ckpt->config(), 0, static_cast<int>(l.tp)));
  const std::string bin = f.IsSet("bin-dir") ? f.String("bin-dir") : DefaultBinDir();
  l.router_bin = bin + "/router/strata-router";
  l.worker_bin = bin + "/worker/strata-worker";
  for (const std::string& b : {l.router_bin, l.worker_bin}) {
    if (access(b.c_str(), X_OK) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(b, " is missing: build //router:strata-router and "
                                                        "//worker:strata-worker, or pass --bin-dir"));
    }
  }
  l.logs = f.String("log-dir");
  if (l.logs.empty()) {
    char tmpl[] = "/tmp/strata-up-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("cannot make a log folder");
    l.logs = tmpl;
  }
  mkdir(l.logs.c_str(), 0755);
  l.auth_tokens = f.String("auth-tokens");
  l.token_file = f.String("token-file");
  if (!l.auth_tokens.empty() && l.token_file.empty()) {
    return absl::InvalidArgumentError(
        "--auth-tokens needs --token-file: a token of that file, for strata up to see the cluster come up");
  }
  if (f.Bool("tls")) STRATA_RETURN_IF_ERROR(MakeThrowawaySecurity(&l));
  l.router_host = f.String("router-host");
  l.worker_hosts = absl::StrSplit(f.String("worker-hosts"), ',', absl::SkipEmpty());
  l.worker_netns = absl::StrSplit(f.String("worker-netns"), ',', absl::SkipEmpty());
  const size_t places = static_cast<size_t>(l.replicas * l.stages);
  for (const auto& [flag, list] : {std::pair{"worker-hosts", &l.worker_hosts}, {"worker-netns", &l.worker_netns}}) {
    if (!list->empty() && list->size() != places) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", list->size(), " entries for ", l.replicas,
                                                     " replica(s) x ", l.stages, " stage(s); one per (replica, stage)"));
    }
  }
  if (!l.worker_netns.empty()) {
    if (l.worker_hosts.empty()) {
      return absl::InvalidArgumentError("--worker-netns needs --worker-hosts: each namespace's address");
    }
    if (l.shm) {
      return absl::InvalidArgumentError(
          "--worker-netns needs --transport tcp: shared memory would pass between the namespaces");
    }
    const char* path = std::getenv("PATH");
    for (absl::string_view dir : absl::StrSplit(absl::StrCat(path ? path : "", ":/usr/sbin:/sbin:/usr/bin:/bin"), ':')) {
      const std::string ip = absl::StrCat(dir, "/ip");
      if (!dir.empty() && access(ip.c_str(), X_OK) == 0) {
        l.ip_bin = ip;
        break;
      }
    }
    if (l.ip_bin.empty()) return absl::InvalidArgumentError("--worker-netns needs the ip command (iproute2)");
  }
  return l;
}

// Only what the user set is passed on: the router's defaults are its own.
std::vector<std::string> RouterArgs(const base::ParsedFlags& f, const Layout& l, int port) {
  std::vector<std::string> a = {l.router_bin, absl::StrCat("--port=", port), absl::StrCat("--fleet-port=", l.fleet_port),
                                absl::StrCat("--model-name=", l.model.substr(l.model.rfind('/') + 1)),
                                absl::StrCat("--ucx-peer-errors=", l.shm ? "false" : "true"),
                                "--host=" + l.router_host};
  // The model folder's tokenizer, when it has one: text in and out.
  if (model::PosixFileSystem()->Exists(l.model + "/tokenizer.json") ||
      model::PosixFileSystem()->Exists(l.model + "/tokenizer.model")) {
    a.push_back("--tokenizer=" + l.model);
  }
  if (l.metrics_port >= 0) a.push_back(absl::StrCat("--metrics-port=", l.metrics_port));
  if (l.http_port > 0) a.push_back(absl::StrCat("--http-port=", l.http_port));
  for (std::string& x : f.ArgsFor(base::RouterEngineFlags())) a.push_back(std::move(x));
  if (!l.auth_tokens.empty()) a.push_back("--auth-tokens=" + l.auth_tokens);
  if (!l.tls.empty()) {
    for (const std::string& x : {"--tls-cert=" + l.tls + "/router.crt", "--tls-key=" + l.tls + "/router.key",
                                 "--mtls-ca=" + l.tls + "/ca.crt", "--mtls-cert=" + l.tls + "/router.crt",
                                 "--mtls-key=" + l.tls + "/router.key"}) {
      a.push_back(x);
    }
  }
  return a;
}

// The ports of one replica's workers: a TP store per stage, a data port
// and a /metrics port per rank. Each worker's /metrics port is picked here,
// so it is known (the ready file) and a worker restarted with the same
// arguments serves on it again.
struct ReplicaPorts {
  std::vector<int> store;
  std::vector<std::vector<int>> data, metrics;
};

ReplicaPorts PickPorts(const Layout& l) {
  ReplicaPorts p;
  p.data.assign(l.stages, std::vector<int>(l.tp));
  p.metrics.assign(l.stages, std::vector<int>(l.tp));
  for (int64_t s = 0; s < l.stages; ++s) {
    p.store.push_back(base::PickFreePort());
    for (int64_t t = 0; t < l.tp; ++t) {
      p.data[s][t] = base::PickFreePort();
      p.metrics[s][t] = base::PickFreePort();
    }
  }
  return p;
}

// Every port a child will listen on, checked before any child starts, so a
// taken one fails at once with the flag that named it, before any child
// runs (the children's own servers refuse a taken port too: none binds
// with SO_REUSEPORT). A port the user named is a flag error; one picked
// here and taken since is not.
absl::Status CheckPorts(const base::ParsedFlags& f, const Layout& l, int router_port,
                        const std::vector<ReplicaPorts>& replicas) {
  struct Use {
    int port;
    std::string what;
    bool named;  // given on the command line
  };
  std::vector<Use> uses = {{router_port, "the router's gRPC port (--port)", f.Int("port") > 0},
                           {l.fleet_port, "the router's Fleet port", false}};
  if (l.http_port > 0) uses.push_back({l.http_port, "the router's HTTP port (--http-port)", f.Int("http-port") > 0});
  if (l.metrics_port > 0) {
    uses.push_back({l.metrics_port, "the router's metrics port (--metrics-port)", f.Int("metrics-port") > 0});
  }
  for (size_t r = 0; r < replicas.size(); ++r) {
    for (int64_t s = 0; s < l.stages; ++s) {
      uses.push_back({replicas[r].store[s], absl::StrCat("the TP store of pipeline p", r, " stage ", s), false});
      for (int64_t t = 0; t < l.tp; ++t) {
        const std::string w = absl::StrCat("worker p", r, " stage ", s, " rank ", t);
        uses.push_back({replicas[r].data[s][t], "the data port of " + w, false});
        uses.push_back({replicas[r].metrics[s][t], "the metrics port of " + w, false});
      }
    }
  }
  for (const Use& u : uses) {
    if (!base::PortInUse(u.port)) continue;
    const std::string msg = absl::StrCat("port ", u.port, ", ", u.what, ", is already in use on this host",
                                         u.named ? " (another strata up or router?); stop it or pick another port"
                                                 : "; try again");
    return u.named ? absl::InvalidArgumentError(msg) : absl::UnavailableError(msg);
  }
  return absl::OkStatus();
}

std::vector<std::string> WorkerArgs(const base::ParsedFlags& f, const Layout& l, const ReplicaPorts& p,
                                    int64_t replica, int64_t s, int64_t t, const std::string& router) {
  std::vector<std::string> a = {l.worker_bin,
                                "--model=" + l.model,
                                absl::StrCat("--pipeline=p", replica),
                                absl::StrCat("--stage=", s),
                                absl::StrCat("--num-stages=", l.stages),
                                absl::StrCat("--tp-rank=", t),
                                absl::StrCat("--tp-size=", l.tp),
                                absl::StrCat("--layers=", model::HalfLayerString(l.begin_half[s]), ":",
                                             model::HalfLayerString(l.begin_half[s + 1])),
                                "--host=" + l.WorkerHost(replica, s),
                                absl::StrCat("--tp-store=", l.WorkerHost(replica, s), ":", p.store[s]),
                                absl::StrCat("--data-port=", p.data[s][t]),
                                "--router=" + router,
                                absl::StrCat("--ucx-peer-errors=", l.shm ? "false" : "true"),
                                absl::StrCat("--metrics-port=", p.metrics[s][t])};
  if (l.movable_boundaries) a.push_back("--movable-boundaries");
  for (std::string& x : f.ArgsFor(base::BackendFlags())) a.push_back(std::move(x));
  for (std::string& x : f.ArgsFor(base::KvFlags())) a.push_back(std::move(x));
  if (s + 1 < l.stages) {
    a.push_back(absl::StrCat("--next-stage=", l.WorkerHost(replica, s + 1), ":", p.data[s + 1][t]));
  }
  if (!l.tls.empty()) {
    for (const std::string& x : {"--mtls-ca=" + l.tls + "/ca.crt", "--mtls-cert=" + l.tls + "/worker.crt",
                                 "--mtls-key=" + l.tls + "/worker.key"}) {
      a.push_back(x);
    }
  }
  if (!l.worker_netns.empty()) {
    // ip execs the worker inside the namespace: the pid, and so the
    // supervision and the ready file's pid, stay the worker's.
    a.insert(a.begin(), {l.ip_bin, "netns", "exec", l.worker_netns[replica * l.stages + s]});
  }
  return a;
}

absl::Status StartAll(const base::ParsedFlags& f, const Layout& l, const std::string& router, int router_port,
                      const std::vector<ReplicaPorts>& replica_ports, std::vector<Child>* children) {
  STRATA_ASSIGN_OR_RETURN(Child rc, Spawn("router", RouterArgs(f, l, router_port), l.logs + "/router.log", l.env));
  if (l.metrics_port >= 0) rc.metrics_address = absl::StrCat(l.router_host, ":", l.metrics_port);
  children->push_back(std::move(rc));
  for (int64_t r = 0; r < l.replicas; ++r) {
    const ReplicaPorts& ports = replica_ports[r];
    for (int64_t s = 0; s < l.stages; ++s) {
      for (int64_t t = 0; t < l.tp; ++t) {
        STRATA_ASSIGN_OR_RETURN(Child c, Spawn(absl::StrCat("worker p", r, " stage ", s, " rank ", t),
                                               WorkerArgs(f, l, ports, r, s, t, router),
                                               absl::StrCat(l.logs, "/worker_p", r, "_s", s, "_r", t, ".log"), l.env));
        c.metrics_address = absl::StrCat(l.WorkerHost(r, s), ":", ports.metrics[s][t]);
        c.place = {{"pipeline", absl::StrCat("p", r)}, {"stage", s}, {"tp_rank", t}};
        children->push_back(std::move(c));
      }
    }
  }
  return absl::OkStatus();
}

// Whether the router's grpc.health.v1 service says SERVING (it follows the
// dispatcher on a thread of its own, so it can trail ListModels a moment).
bool HealthServing(grpc::health::v1::Health::Stub* health, const ClientChannel& client) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  client.Authorize(&ctx);
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  return health->Check(&ctx, req, &resp).ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

// Healthy: every replica up, as ListModels reports, and the health service
// serving, so that a caller who reads the ready file finds both.
absl::Status WaitHealthy(const std::string& router, const Layout& l, int64_t timeout_s, std::vector<Child>* children) {
  std::string token;
  if (!l.token_file.empty()) std::ifstream(l.token_file) >> token;
  STRATA_ASSIGN_OR_RETURN(ClientChannel client,
                          ClientChannel::Open(router, l.tls.empty() ? "" : l.tls + "/ca.crt", token));
  auto stub = v1::Inference::NewStub(client.channel());
  auto health = grpc::health::v1::Health::NewStub(client.channel());
  const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  while (true) {
    for (Child& c : *children) {
      if (!c.process.Running()) {
        return absl::UnavailableError(absl::StrCat(c.name, " exited with status ", c.process.exit_status().value_or(-1),
                                                   "; its log (", c.process.log(), "):\n",
                                                   base::LogTail(c.process.log())));
      }
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    client.Authorize(&ctx);
    v1::ListModelsResponse lm;
    if (stub->ListModels(&ctx, v1::ListModelsRequest(), &lm).ok() && lm.models_size() == 1 &&
        lm.models(0).pipelines_up() == l.replicas && HealthServing(health.get(), client)) {
      return absl::OkStatus();
    }
    if (Clock::now() > deadline) {
      return absl::UnavailableError(
          absl::StrCat("the cluster did not come up within ", timeout_s, " s; logs in ", l.logs));
    }
    // Ctrl-C or SIGTERM while it comes up stops it too (they are blocked,
    // so without this they would wait until the cluster is healthy).
    if (const int sig = base::WaitForStopSignal(milliseconds(100)); sig != 0) {
      return absl::CancelledError(absl::StrCat("stopped by signal ", sig, " before the cluster came up"));
    }
  }
}

// The children too, so a fault test can kill one and start it again, and
// every process's /metrics address, so Prometheus can be pointed at them.
void WriteReadyFile(const std::string& path, const std::string& router, const Layout& l,
                    const std::vector<Child>& children) {
  nlohmann::json workers = nlohmann::json::array();
  for (size_t i = 1; i < children.size(); ++i) {
    const base::Process& p = children[i].process;
    nlohmann::json w = {{"name", children[i].name},
                        {"pid", p.pid()},
                        {"argv", p.argv()},
                        {"log", p.log()},
                        {"metrics_address", children[i].metrics_address}};
    w.update(children[i].place);
    workers.push_back(std::move(w));
  }
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << nlohmann::json({{"address", router},
                                        {"logs", l.logs},
                                        {"router_pid", children[0].process.pid()},
                                        {"router_argv", children[0].process.argv()},
                                        {"fleet_address", absl::StrCat(l.router_host, ":", l.fleet_port)},
                                        {"router_log", children[0].process.log()},
                                        {"http_address", l.http_port > 0 ? absl::StrCat(l.router_host, ":", l.http_port) : ""},
                                        {"metrics_address", children[0].metrics_address},
                                        {"ucx_tls", l.env[0].second},
                                        {"ca", l.tls.empty() ? "" : l.tls + "/ca.crt"},
                                        {"tls_dir", l.tls},
                                        {"token_file", l.token_file},
                                        {"auth_tokens", l.auth_tokens},
                                        {"workers", workers}})
                            .dump()
                     << "\n";
  std::rename(tmp.c_str(), path.c_str());
}

// One look at the children while the cluster serves: reports each that
// exited and, with `restart`, starts a worker again once its backoff has
// passed (from this thread: see SpawnProcess). The router is not restarted:
// it holds every request's state, and the workers register again with a
// router restarted by hand (docs/reliability.md). Whether a pid changed.
bool Supervise(const Layout& l, bool restart, std::vector<Child>* children) {
  bool changed = false;
  const auto now = Clock::now();
  for (size_t i = 0; i < children->size(); ++i) {
    Child& c = (*children)[i];
    const bool worker = i > 0;
    if (c.process.pid() > 0) {
      if (c.process.Running()) {
        if (now - c.started >= kStableFor) c.backoff = kFirstBackoff;
        continue;
      }
      std::cerr << "strata up: " << c.name << " exited with status " << c.process.exit_status().value_or(-1)
                << " (log " << c.process.log() << ")";
      if (worker && restart) {
        if (now - c.started >= kStableFor) c.backoff = kFirstBackoff;
        c.restart_at = now + c.backoff;
        std::cerr << "; restarting it in " << static_cast<double>(c.backoff.count()) / 1000 << " s";
        c.backoff = std::min(c.backoff * 2, kMaxBackoff);
      }
      std::cerr << std::endl;
      continue;
    }
    if (!c.restart_at.has_value() || now < *c.restart_at) continue;
    c.restart_at.reset();
    c.started = now;
    ++c.restarts;
    absl::StatusOr<base::Process> p = SpawnProcess(c.process.argv(), c.process.log(), l.env, /*append_log=*/true);
    if (!p.ok()) {
      c.restart_at = now + c.backoff;
      std::cerr << "strata up: cannot restart " << c.name << ": " << p.status().message() << "; trying again in "
                << static_cast<double>(c.backoff.count()) / 1000 << " s" << std::endl;
      c.backoff = std::min(c.backoff * 2, kMaxBackoff);
      continue;
    }
    c.process = std::move(*p);
    changed = true;
    std::cerr << "strata up: restarted " << c.name << " (pid " << c.process.pid() << ", restart " << c.restarts
              << ")" << std::endl;
  }
  return changed;
}

}  // namespace

const base::FlagTable& UpFlags() {
  using base::IntFlag;
  using base::StringFlag;
  static const base::FlagTable* table = new base::FlagTable(
      "strata up [flags]",
      "A router and S x T x R workers on this host, serving once every replica is up.\n"
      "Prints the address; Ctrl-C drains the router, then stops everything. --port and --metrics-port\n"
      "are the router's; each worker serves /metrics on a free port (the ready file lists every one);\n"
      "the backend and KV flags go to every worker. A port in use fails at once; a worker that exits\n"
      "is restarted with backoff; no child outlives strata up.",
      {{"cluster",
        {StringFlag("model", std::nullopt, "DIR", "the model folder (default: the tiny test model in ~/.cache/strata)"),
         IntFlag("stages", 1, 1, 64, "pipeline stages"),
         IntFlag("tp", 1, 1, 8, "tensor-parallel ranks per stage"),
         StringFlag("layers", std::nullopt, "N,N,...",
                    "layers per stage, first to last; N.5 ends or starts a stage inside a layer, after its "
                    "attention (default: balanced by the weights a decode step reads, the lm_head counted on the "
                    "last stage)"),
         base::BoolFlag("movable-boundaries", false,
                        "every worker also holds the MLP block beside each of its stage boundaries, and the router "
                        "moves the boundaries across those blocks step by step, to whichever side its measured "
                        "stage times say balances the step (needs --stages 2 or more)"),
         IntFlag("replicas", 1, 1, 16, "pipeline replicas"),
         base::ChoiceFlag("transport", "shm", {"shm", "tcp"}, "UCX between the processes"),
         IntFlag("port", 0, 0, 65535, "the router's gRPC port (0: a free one)"),
         base::MetricsPortFlag(),
         base::HttpPortFlag(),
         StringFlag("bin-dir", std::nullopt, "DIR", "holds router/strata-router and worker/strata-worker "
                                                    "(default: this binary's bazel-bin)"),
         StringFlag("log-dir", std::nullopt, "DIR", "the children's logs (default: a new folder in /tmp)"),
         StringFlag("ready-file", std::nullopt, "PATH",
                    "written once healthy: the addresses (gRPC, HTTP, every /metrics), logs, pids and argv"),
         IntFlag("timeout-s", 180, 1, 3600, "how long the cluster may take to come up"),
         base::BoolFlag("restart-workers", true,
                        "start a worker that exits again, with the same arguments, after 0.5 s doubling to 10 s "
                        "while it keeps exiting (back to 0.5 s once it has stayed up 30 s); each restart is logged "
                        "and the ready file rewritten with the new pid"),
         base::BoolFlag("tls", false,
                        "security on: a throwaway CA (LOG_DIR/tls/ca.crt), TLS on the public ports, mutual TLS on "
                        "the control plane, and a bearer token (LOG_DIR/tls/token) unless --auth-tokens is given"),
         StringFlag("auth-tokens", std::nullopt, "FILE", "the router's bearer tokens (see strata-router --help)"),
         StringFlag("token-file", std::nullopt, "FILE",
                    "with --auth-tokens: a token of that file, which strata up calls the router with"),
         StringFlag("router-host", "127.0.0.1", "ADDR", "the address the router serves on and the workers reach it at"),
         StringFlag("worker-hosts", "", "ADDR,...",
                    "the address each (replica, stage)'s workers serve on, replica-major (default: 127.0.0.1)"),
         StringFlag("worker-netns", "", "NS,...",
                    "run each (replica, stage)'s workers in this network namespace (ip netns exec), replica-major; "
                    "needs --worker-hosts and --transport tcp (fault tests cut links between namespaces)")}},
       base::BackendFlags(), base::KvFlags(), base::RouterEngineFlags()});
  return *table;
}

absl::Status Up(const base::ParsedFlags& f) {
  STRATA_ASSIGN_OR_RETURN(const Layout l, PlanLayout(f));
  // Ctrl-C and SIGTERM are taken by this thread below, once everything is up.
  base::BlockStopSignals();
  const int router_port = f.Int("port") > 0 ? static_cast<int>(f.Int("port")) : base::PickFreePort();
  const std::string router = absl::StrCat(l.router_host, ":", router_port);
  std::vector<ReplicaPorts> replica_ports;
  for (int64_t r = 0; r < l.replicas; ++r) replica_ports.push_back(PickPorts(l));
  std::vector<Child> children;
  absl::Status s = CheckPorts(f, l, router_port, replica_ports);
  // Workers register at the Fleet service's own port, not the public one.
  if (s.ok()) s = StartAll(f, l, absl::StrCat(l.router_host, ":", l.fleet_port), router_port, replica_ports, &children);
  if (s.ok()) s = WaitHealthy(router, l, f.Int("timeout-s"), &children);
  if (!s.ok()) {
    StopAll(children.begin(), children.end(), milliseconds(5000));
    return s.code() == absl::StatusCode::kInvalidArgument ? s : absl::UnavailableError(s.message());
  }
  const char* scheme = l.tls.empty() ? "http" : "https";
  if (l.http_port > 0) {
    std::cout << "strata up: OpenAI-compatible HTTP API on " << scheme << "://" << l.router_host << ":" << l.http_port
              << "/v1\n";
  }
  if (!l.tls.empty()) {
    std::cout << "strata up: TLS on; clients trust the CA at " << l.tls << "/ca.crt";
    if (l.auth_tokens == l.tls + "/tokens.json") std::cout << "; the bearer token is in " << l.tls << "/token";
    std::cout << "\n";
  }
  if (l.metrics_port >= 0) {
    std::cout << "strata up: the router's metrics on http://" << l.router_host << ":" << l.metrics_port << "/metrics\n";
  }
  std::cout << "strata up: serving " << l.model << " on " << router << " (" << l.stages << " stage(s) x " << l.tp
            << " rank(s) x " << l.replicas << " replica(s), UCX " << (l.shm ? "shared memory" : "TCP")
            << "); logs in " << l.logs << "; Ctrl-C stops" << std::endl;
  if (f.IsSet("ready-file")) WriteReadyFile(f.String("ready-file"), router, l, children);
  // Wait for Ctrl-C or SIGTERM, watching the children meanwhile.
  const bool restart = f.Bool("restart-workers");
  while (base::WaitForStopSignal(milliseconds(100)) == 0) {
    if (Supervise(l, restart, &children) && f.IsSet("ready-file")) {
      WriteReadyFile(f.String("ready-file"), router, l, children);
    }
  }
  std::cerr << "strata up: stopping (the router drains first)\n";
  StopAll(children.begin(), children.begin() + 1, milliseconds(35000));
  StopAll(children.begin() + 1, children.end(), milliseconds(35000));
  return absl::OkStatus();
}

}  // namespace strata::tools
