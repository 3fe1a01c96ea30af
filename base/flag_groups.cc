#include "base/flag_groups.h"

namespace strata::base {

FlagGroup BackendFlags() {
  return {"backend",
          {ChoiceFlag("backend", "cpu", {"cpu", "reference", "cuda"},
                      "cpu: the fast CPU kernels; reference: the plain float32 oracle; cuda: a GPU"),
           IntFlag("threads", 1, 1, 1024, "CPU threads of the shared pool"),
           ChoiceFlag("isa", "auto", {"auto", "amx", "avx512bf16", "avx512", "avx2", "portable"},
                      "cpu backend: the instruction set (auto: the best cpuid reports)"),
           ChoiceFlag("kv-dtype", "bf16", {"bf16", "f32"}, "cpu backend: the KV cache's element type")}};
}

Flag BlockSizeFlag() { return IntFlag("block-size", 16, 1, 4096, "tokens per KV cache block"); }

FlagGroup KvFlags() {
  return {"KV cache",
          {BlockSizeFlag(),
           IntFlag("kv-memory-mb", 256, 1, int64_t{1} << 24, "the KV pool's budget per worker, in MiB"),
           IntFlag("kv-blocks", 0, 0, int64_t{1} << 31, "KV blocks per worker (0: as many as --kv-memory-mb holds)")}};
}

FlagGroup DataPlaneFlags() {
  return {"data plane",
          {IntFlag("data-port", 0, 0, 65535, "UCX data-plane port (0: any)"),
           BoolFlag("ucx-peer-errors", true,
                    "UCX peer-failure detection (false on one host lets UCX use shared memory)")}};
}

Flag MetricsPortFlag() { return IntFlag("metrics-port", -1, -1, 65535, "Prometheus /metrics port (-1: off, 0: any)"); }

Flag HttpPortFlag() {
  return IntFlag("http-port", -1, -1, 65535, "port of the OpenAI-compatible HTTP API (-1: off, 0: any)");
}

FlagGroup RouterEngineFlags() {
  return {"scheduling and fleet (router)",
          {IntFlag("max-queue", 256, 1, 1 << 20, "waiting requests beyond this get RESOURCE_EXHAUSTED"),
           IntFlag("max-tokens-limit", 4096, 1, 1 << 20, "the largest max_tokens a request may ask for"),
           IntFlag("max-tokens-per-step", 256, 1, 1 << 16, "token budget of one scheduled step"),
           IntFlag("max-seqs-per-step", 64, 1, 4096, "sequences in one scheduled step"),
           IntFlag("heartbeat-ms", 1000, 50, 600000, "Health call to every worker this often"),
           IntFlag("down-after-ms", 2000, 100, 3600000, "a worker silent this long marks its pipeline down"),
           IntFlag("step-timeout-ms", 30000, 100, 3600000, "a step without its result this long marks its pipeline down"),
           IntFlag("max-migrations", 3, 0, 100,
                   "a request moves to another replica at most this often when its own goes down (then UNAVAILABLE)"),
           IntFlag("drain-ms", 30000, 0, 3600000, "on SIGTERM, running requests may finish within this"),
           BoolFlag("prefix-caching", true,
                    "reuse a replica's KV blocks of prompt prefixes it already computed (false: compute every prompt)")}};
}

FlagGroup ControlTlsFlags() {
  return {"control-plane security (mutual TLS)",
          {StringFlag("mtls-ca", std::nullopt, "FILE", "the CA that signs the router's and the workers' certificates"),
           StringFlag("mtls-cert", std::nullopt, "FILE", "this process's certificate (PEM), signed by --mtls-ca"),
           StringFlag("mtls-key", std::nullopt, "FILE", "its private key (PEM)")}};
}

FlagGroup PublicApiSecurityFlags() {
  return {"public API security",
          {StringFlag("tls-cert", std::nullopt, "FILE", "TLS certificate of the public gRPC and HTTP ports (PEM)"),
           StringFlag("tls-key", std::nullopt, "FILE", "its private key (PEM)"),
           StringFlag("tls-client-ca", std::nullopt, "FILE",
                      "verify callers' certificates against this CA (gRPC: when presented; HTTP: required)"),
           StringFlag("auth-tokens", std::nullopt, "FILE",
                      "bearer tokens callers must present, with their models and limits (JSON; SIGHUP reloads)"),
           BoolFlag("auth-health", false, "health and reflection need a token too (gRPC; HTTP /health, /ready)")}};
}

}  // namespace strata::base
