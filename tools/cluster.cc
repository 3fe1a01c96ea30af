#include "tools/cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/grpcpp.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "model/checkpoint.h"
#include "model/file_system.h"
#include "model/make_model.h"
#include "nlohmann/json.hpp"
#include "strata/v1/inference.grpc.pb.h"
#include "base/status_macros.h"
#include "base/net.h"
#include "tools/flags.h"

namespace strata::tools {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct Child {
  std::string name;
  pid_t pid = -1;
  std::string log;
  std::vector<std::string> argv;
};

absl::StatusOr<Child> Spawn(const std::string& name, const std::vector<std::string>& argv, const std::string& log,
                            const std::vector<std::pair<std::string, std::string>>& env) {
  Child c;
  c.name = name;
  c.log = log;
  c.pid = fork();
  if (c.pid < 0) return absl::InternalError("fork failed");
  if (c.pid == 0) {
    setpgid(0, 0);  // Ctrl-C reaches strata up, which stops the children in order
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "cannot run %s\n", args[0]);
    _exit(127);
  }
  return c;
}

bool Exited(Child* c, int* code) {
  int status = 0;
  if (c->pid > 0 && waitpid(c->pid, &status, WNOHANG) == c->pid) {
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    c->pid = -1;
    return true;
  }
  return c->pid <= 0;
}

std::string Tail(const std::string& path, size_t bytes = 2000) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

void StopAll(std::vector<Child>* children, int budget_ms) {
  for (Child& c : *children) {
    if (c.pid > 0) kill(c.pid, SIGTERM);
  }
  const auto deadline = Clock::now() + milliseconds(budget_ms);
  for (Child& c : *children) {
    int code = 0;
    while (c.pid > 0 && !Exited(&c, &code) && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(20));
    if (c.pid > 0) {
      kill(c.pid, SIGKILL);
      waitpid(c.pid, nullptr, 0);
      c.pid = -1;
    }
  }
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

}  // namespace

absl::Status Up(const std::vector<std::string>& args) {
  STRATA_ASSIGN_OR_RETURN(
      Flags f, Flags::Parse(args,
                            {"model", "stages", "tp", "replicas", "port", "backend", "threads", "isa", "kv-dtype",
                             "kv-memory-mb", "block-size", "transport", "metrics-port", "bin-dir", "log-dir",
                             "ready-file", "timeout-s", "max-tokens-per-step", "kv-blocks", "max-queue",
                             "down-after-ms", "heartbeat-ms"},
                            {}));
  STRATA_ASSIGN_OR_RETURN(int64_t stages, f.GetInt("stages", 1, 1, 64));
  STRATA_ASSIGN_OR_RETURN(int64_t tp, f.GetInt("tp", 1, 1, 8));
  STRATA_ASSIGN_OR_RETURN(int64_t replicas, f.GetInt("replicas", 1, 1, 16));
  STRATA_ASSIGN_OR_RETURN(int64_t port, f.GetInt("port", 0, 0, 65535));
  STRATA_ASSIGN_OR_RETURN(int64_t metrics_port, f.GetInt("metrics-port", -1, -1, 65535));
  STRATA_ASSIGN_OR_RETURN(int64_t timeout_s, f.GetInt("timeout-s", 180, 1, 3600));
  STRATA_ASSIGN_OR_RETURN(const std::string transport, f.GetChoice("transport", "shm", {"shm", "tcp"}));
  STRATA_ASSIGN_OR_RETURN(const std::string backend, f.GetChoice("backend", "cpu", {"cpu", "reference", "cuda"}));
  STRATA_ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads", 1, 1, 1024));
  STRATA_ASSIGN_OR_RETURN(int64_t kv_mb, f.GetInt("kv-memory-mb", 256, 1, int64_t{1} << 24));
  STRATA_ASSIGN_OR_RETURN(int64_t block_size, f.GetInt("block-size", 16, 1, 4096));
  STRATA_ASSIGN_OR_RETURN(int64_t step_tokens, f.GetInt("max-tokens-per-step", 256, 1, 65536));
  STRATA_ASSIGN_OR_RETURN(int64_t kv_blocks, f.GetInt("kv-blocks", 0, 0, int64_t{1} << 31));
  STRATA_ASSIGN_OR_RETURN(int64_t max_queue, f.GetInt("max-queue", 256, 1, 1 << 20));
  STRATA_ASSIGN_OR_RETURN(int64_t down_after_ms, f.GetInt("down-after-ms", 5000, 100, 3600000));
  STRATA_ASSIGN_OR_RETURN(int64_t heartbeat_ms, f.GetInt("heartbeat-ms", 1000, 50, 600000));

  std::string model = f.GetString("model", "");
  if (model.empty()) {
    model = CacheDir() + "/tiny";
    if (!model::PosixFileSystem()->Exists(model + "/config.json")) {
      model::MakeModelOptions o;
      STRATA_ASSIGN_OR_RETURN(o.config, model::LlamaPreset("tiny"));
      std::cerr << "strata up: no --model; writing the tiny test model to " << model << "\n";
      STRATA_RETURN_IF_ERROR(model::WriteRandomModel(model::PosixFileSystem(), model, o));
    }
  }
  STRATA_ASSIGN_OR_RETURN(auto ckpt, model::Checkpoint::Open(model::PosixFileSystem(), model));
  if (stages > ckpt->config().num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("--stages ", stages, " is more than the model's ",
                                                   ckpt->config().num_layers, " layers"));
  }
  const std::string bin = f.GetString("bin-dir", DefaultBinDir());
  const std::string router_bin = bin + "/router/strata-router", worker_bin = bin + "/worker/strata-worker";
  for (const std::string& b : {router_bin, worker_bin}) {
    if (access(b.c_str(), X_OK) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(b, " is missing: build //router:strata-router and "
                                                        "//worker:strata-worker, or pass --bin-dir"));
    }
  }
  std::string logs = f.GetString("log-dir", "");
  if (logs.empty()) {
    char tmpl[] = "/tmp/strata-up-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("cannot make a log folder");
    logs = tmpl;
  }
  mkdir(logs.c_str(), 0755);
  std::vector<std::pair<std::string, std::string>> env;
  const bool shm = transport == "shm";
  env.push_back({"UCX_TLS", shm ? "sm,tcp,self" : "tcp,self"});

  // Block Ctrl-C and SIGTERM here; this thread waits for them later.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::vector<Child> children;
  auto fail = [&](const std::string& why) {
    StopAll(&children, 5000);
    return absl::UnavailableError(why);
  };
  const int router_port = port > 0 ? static_cast<int>(port) : base::PickFreePort();
  const std::string router_addr = absl::StrCat("127.0.0.1:", router_port);
  std::vector<std::string> rargs = {router_bin, "--port", absl::StrCat(router_port), "--model-name",
                                    model.substr(model.rfind('/') + 1), "--ucx-peer-errors", shm ? "false" : "true",
                                    "--max-tokens-per-step", absl::StrCat(step_tokens),
                                    "--max-queue", absl::StrCat(max_queue),
                                    "--down-after-ms", absl::StrCat(down_after_ms),
                                    "--heartbeat-ms", absl::StrCat(heartbeat_ms)};
  // The model folder's tokenizer, when it has one: text in and out.
  if (model::PosixFileSystem()->Exists(model + "/tokenizer.json") ||
      model::PosixFileSystem()->Exists(model + "/tokenizer.model")) {
    rargs.push_back("--tokenizer");
    rargs.push_back(model);
  }
  if (metrics_port >= 0) {
    rargs.push_back("--metrics-port");
    rargs.push_back(absl::StrCat(metrics_port));
  }
  STRATA_ASSIGN_OR_RETURN(Child router, Spawn("router", rargs, logs + "/router.log", env));
  children.push_back(router);
  for (int64_t r = 0; r < replicas; ++r) {
    std::vector<std::vector<int>> data(stages, std::vector<int>(tp));
    std::vector<int> store(stages);
    for (int64_t s = 0; s < stages; ++s) {
      store[s] = base::PickFreePort();
      for (int64_t t = 0; t < tp; ++t) data[s][t] = base::PickFreePort();
    }
    for (int64_t s = 0; s < stages; ++s) {
      for (int64_t t = 0; t < tp; ++t) {
        std::vector<std::string> w = {worker_bin, "--model", model, "--pipeline", absl::StrCat("p", r),
                                      "--stage", absl::StrCat(s), "--num-stages", absl::StrCat(stages),
                                      "--tp-rank", absl::StrCat(t), "--tp-size", absl::StrCat(tp),
                                      "--tp-store", absl::StrCat("127.0.0.1:", store[s]),
                                      "--data-port", absl::StrCat(data[s][t]), "--router", router_addr,
                                      "--backend", backend, "--threads", absl::StrCat(threads),
                                      "--kv-memory-mb", absl::StrCat(kv_mb), "--block-size", absl::StrCat(block_size),
                                      "--ucx-peer-errors", shm ? "false" : "true", "--metrics-port", "0"};
        if (kv_blocks > 0) {
          w.push_back("--kv-blocks");
          w.push_back(absl::StrCat(kv_blocks));
        }
        if (f.Has("isa")) {
          w.push_back("--isa");
          w.push_back(f.GetString("isa", "auto"));
        }
        if (f.Has("kv-dtype")) {
          w.push_back("--kv-dtype");
          w.push_back(f.GetString("kv-dtype", "bf16"));
        }
        if (s + 1 < stages) {
          w.push_back("--next-stage");
          w.push_back(absl::StrCat("127.0.0.1:", data[s + 1][t]));
        }
        STRATA_ASSIGN_OR_RETURN(Child c, Spawn(absl::StrCat("worker p", r, " stage ", s, " rank ", t), w,
                                               absl::StrCat(logs, "/worker_p", r, "_s", s, "_r", t, ".log"), env));
        c.argv = w;
        children.push_back(c);
      }
    }
  }
  // Healthy: every replica up, as ListModels reports.
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(router_addr, grpc::InsecureChannelCredentials()));
  const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  while (true) {
    for (Child& c : children) {
      int code = 0;
      if (c.pid > 0 && Exited(&c, &code)) {
        return fail(absl::StrCat(c.name, " exited with status ", code, "; its log (", c.log, "):\n", Tail(c.log)));
      }
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    v1::ListModelsResponse lm;
    if (stub->ListModels(&ctx, v1::ListModelsRequest(), &lm).ok() && lm.models_size() == 1 &&
        lm.models(0).pipelines_up() == replicas) {
      break;
    }
    if (Clock::now() > deadline) {
      return fail(absl::StrCat("the cluster did not come up within ", timeout_s, " s; logs in ", logs));
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  std::cout << "strata up: serving " << model << " on " << router_addr << " (" << stages << " stage(s) x " << tp
            << " rank(s) x " << replicas << " replica(s), UCX " << (shm ? "shared memory" : "TCP") << "); logs in "
            << logs << "; Ctrl-C stops" << std::endl;
  if (f.Has("ready-file")) {
    const std::string path = f.GetString("ready-file", ""), tmp = path + ".tmp";
    // The children too, so a fault test can kill one and start it again.
    nlohmann::json workers = nlohmann::json::array();
    for (size_t i = 1; i < children.size(); ++i) {
      workers.push_back({{"name", children[i].name}, {"pid", children[i].pid}, {"argv", children[i].argv},
                         {"log", children[i].log}});
    }
    std::ofstream(tmp) << nlohmann::json({{"address", router_addr},
                                          {"logs", logs},
                                          {"router_pid", children[0].pid},
                                          {"ucx_tls", env[0].second},
                                          {"workers", workers}})
                              .dump()
                       << "\n";
    std::rename(tmp.c_str(), path.c_str());
  }
  // Wait for Ctrl-C or SIGTERM, watching the children meanwhile.
  timespec poll{0, 200 * 1000 * 1000};
  while (true) {
    siginfo_t info;
    if (sigtimedwait(&stop_signals, &info, &poll) > 0) break;
    for (Child& c : children) {
      int code = 0;
      if (c.pid > 0 && Exited(&c, &code)) {
        std::cerr << "strata up: " << c.name << " exited with status " << code << " (log " << c.log << ")\n";
      }
    }
  }
  std::cerr << "strata up: stopping (the router drains first)\n";
  std::vector<Child> router_only(children.begin(), children.begin() + 1);
  StopAll(&router_only, 35000);
  std::vector<Child> workers(children.begin() + 1, children.end());
  StopAll(&workers, 35000);
  return absl::OkStatus();
}

absl::Status Generate(const std::vector<std::string>& args) {
  STRATA_ASSIGN_OR_RETURN(Flags f, Flags::Parse(args,
                                                {"server", "prompt-ids", "max-tokens", "temperature", "top-k", "top-p",
                                                 "seed", "ignore-eos", "json", "stream", "logprobs", "timeout-ms",
                                                 "priority", "request-id", "prompt", "chat", "stop"},
                                                {"ignore-eos", "json", "stream", "chat"}));
  if (!f.Has("server")) return absl::InvalidArgumentError("--server HOST:PORT is required");
  if (f.Has("prompt") == f.Has("prompt-ids")) return absl::InvalidArgumentError("give exactly one of --prompt and --prompt-ids");
  std::vector<int64_t> ids;
  if (f.Has("prompt-ids")) {
    STRATA_ASSIGN_OR_RETURN(ids, f.GetIntList("prompt-ids", 0, INT32_MAX));
  }
  STRATA_ASSIGN_OR_RETURN(int64_t max_tokens, f.GetInt("max-tokens", 16, 1, 1 << 20));
  STRATA_ASSIGN_OR_RETURN(int64_t top_k, f.GetInt("top-k", 0, 0, 1 << 20));
  STRATA_ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed", 0, 0, INT64_MAX));
  STRATA_ASSIGN_OR_RETURN(int64_t logprobs, f.GetInt("logprobs", -1, -1, 20));
  STRATA_ASSIGN_OR_RETURN(int64_t timeout_ms, f.GetInt("timeout-ms", 600000, 1, 86400000));
  STRATA_ASSIGN_OR_RETURN(int64_t priority, f.GetInt("priority", 0, INT32_MIN, INT32_MAX));
  double temperature = 0, top_p = 1;
  if (f.Has("temperature") && !absl::SimpleAtod(f.GetString("temperature", "0"), &temperature)) {
    return absl::InvalidArgumentError("--temperature is not a number");
  }
  if (f.Has("top-p") && !absl::SimpleAtod(f.GetString("top-p", "1"), &top_p)) {
    return absl::InvalidArgumentError("--top-p is not a number");
  }
  v1::GenerateRequest req;
  req.set_request_id(f.GetString("request-id", ""));
  for (int64_t id : ids) req.add_prompt_ids(static_cast<int32_t>(id));
  if (f.Has("prompt")) {
    if (f.GetBool("chat")) {
      v1::ChatMessage* m = req.add_messages();
      m->set_role("user");
      m->set_content(f.GetString("prompt", ""));
    } else {
      req.set_prompt(f.GetString("prompt", ""));
    }
  }
  if (f.Has("stop")) req.mutable_stop()->add_stop_strings(f.GetString("stop", ""));
  req.mutable_sampling()->set_temperature(static_cast<float>(temperature));
  req.mutable_sampling()->set_top_k(static_cast<int32_t>(top_k));
  req.mutable_sampling()->set_top_p(static_cast<float>(top_p));
  req.mutable_sampling()->set_seed(static_cast<uint64_t>(seed));
  req.mutable_stop()->set_max_tokens(static_cast<int32_t>(max_tokens));
  req.mutable_stop()->set_ignore_eos(f.GetBool("ignore-eos"));
  req.set_logprobs(static_cast<int32_t>(logprobs));
  req.set_return_logprobs(logprobs >= 0);
  req.set_priority(static_cast<int32_t>(priority));
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(f.GetString("server", ""), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(timeout_ms));
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse msg;
  std::vector<int32_t> tokens;
  nlohmann::json logprob_json = nlohmann::json::array();
  std::string finish = "none", request_id, text;
  v1::Usage usage;
  const bool json = f.GetBool("json"), stream = f.GetBool("stream");
  while (reader->Read(&msg)) {
    request_id = msg.request_id();
    text += msg.text();
    std::vector<int32_t> fresh;
    for (const auto& t : msg.tokens()) {
      fresh.push_back(t.token_id());
      tokens.push_back(t.token_id());
      if (logprobs >= 0) {
        nlohmann::json top = nlohmann::json::array();
        for (const auto& o : t.top()) top.push_back({{"id", o.token_id()}, {"logprob", o.logprob()}});
        logprob_json.push_back({{"id", t.token_id()}, {"logprob", t.logprob()}, {"top", top}});
      }
    }
    if (stream && (!fresh.empty() || !msg.text().empty())) {
      if (json) {
        std::cout << nlohmann::json({{"tokens", fresh}, {"text", msg.text()}}).dump() << std::endl;
      } else if (!msg.text().empty()) {
        std::cout << msg.text() << std::flush;
      } else {
        std::cout << absl::StrJoin(fresh, " ") << std::endl;
      }
    }
    if (msg.finish_reason() != v1::GenerateResponse::FINISH_REASON_UNSPECIFIED) {
      finish = absl::AsciiStrToLower(v1::GenerateResponse::FinishReason_Name(msg.finish_reason()));
      usage = msg.usage();
    }
  }
  grpc::Status s = reader->Finish();
  if (json) {
    nlohmann::json out = {{"request_id", request_id}, {"tokens", tokens}, {"text", text}, {"finish_reason", finish},
                          {"usage", {{"prompt_tokens", usage.prompt_tokens()}, {"completion_tokens", usage.completion_tokens()}}}};
    if (logprobs >= 0) out["logprobs"] = logprob_json;
    if (!s.ok()) out["error"] = {{"code", static_cast<int>(s.error_code())}, {"message", s.error_message()}};
    std::cout << out.dump() << std::endl;
  } else if (!stream) {
    std::cout << absl::StrJoin(tokens, " ") << "\n";
    if (!text.empty()) std::cout << "text: " << text << "\n";
    std::cout << "finish: " << finish << std::endl;
  } else if (!text.empty()) {
    std::cout << "\nfinish: " << finish << std::endl;
  }
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return absl::OkStatus();
}

}  // namespace strata::tools
