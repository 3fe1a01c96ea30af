// A plan (tools/plan.h) as the settings strata runs with, so planning and
// deployment cannot disagree:
// - each worker's --config JSON for hosts run by systemd
//   (deploy/systemd/strata-worker@.service reads worker-INSTANCE.json and
//   worker-INSTANCE.env), placed GPU by GPU on the nodes, and the router's
//   router.env;
// - Kubernetes objects in two forms: each pipeline replica as one group of
//   a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1; the group's size is
//   stages x TP, worker index w is stage w / TP rank w % TP, so the leader,
//   index 0, is stage 0 rank 0; each stage is an LWS subgroup placed on one
//   node), or, for clusters without LWS, a StatefulSet per stage of each
//   replica (its pod ordinal is the TP rank). Both share: the router
//   Deployment and Service, a ConfigMap of per-stage worker configs (the
//   same keys strata-worker's flags have; the pod adds only its rank,
//   pipeline, address and peers on the command line), GPU and RDMA NIC
//   resources, the UCX environment, probes (the workers' are gRPC health
//   probes of their plaintext --health-port, TLS on or off), a preStop drain
//   with a grace period longer than the router's --drain-ms, a
//   PodDisruptionBudget, a ServiceMonitor, and the strata-tls /
//   strata-tokens Secret mounts.
#ifndef STRATA_TOOLS_PLAN_LAUNCH_H_
#define STRATA_TOOLS_PLAN_LAUNCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tools/plan.h"

namespace strata::tools {

struct LaunchOptions {
  std::string model_path = "/models/model";  // the model folder on every host and in every pod
  std::string model_name = "llama";           // --model-name of the router and workers
  // systemd: the nodes' addresses, one per node the replicas use (default
  // node-0, node-1, ...); the router runs on the first.
  std::vector<std::string> node_hosts;
  int64_t cpu_threads = 0;  // CPU hosts: the workers' --threads (0: the worker's default)
  // Kubernetes.
  std::string image = "strata:latest";
  std::string model_pvc = "strata-model";
  std::string gpu_resource = "nvidia.com/gpu";
  std::string rdma_resource = "rdma/rdma_shared_device_a";  // "": none
  int64_t drain_ms = 30000;                                  // the router's --drain-ms
  // TLS on the public port with bearer tokens, mutual TLS on the control
  // plane: the router and workers read the strata-tls Secret (ca.crt,
  // tls.crt, tls.key at /etc/strata/tls) and the router the strata-tokens
  // Secret (tokens.json at /etc/strata/tokens), which become required.
  // Off: the Secrets are still mounted, optional, and nothing reads them.
  bool tls = false;
};

struct LaunchFile {
  std::string path;  // relative, e.g. "systemd/node-0/worker-p0-s0-r0.json"
  std::string text;
};

// Where worker (replica, stage, rank) runs on hosts: node index and its
// GPU (or socket) index on that node. Replica p's worker w = stage * tp +
// rank takes device p * tp * pp + w, nodes filled in order.
struct WorkerPlace {
  int64_t node = 0, local = 0;
};
WorkerPlace PlaceWorker(const Plan& plan, const PlanRequest& request, int64_t replica, int64_t stage, int64_t rank);

// The --config JSON of one worker run by systemd (every key a strata-worker flag).
nlohmann::ordered_json WorkerConfig(const Plan& plan, const PlanRequest& request, const LaunchOptions& options,
                                    int64_t replica, int64_t stage, int64_t rank);

// The per-stage config that every pod of stage `stage` reads in Kubernetes.
nlohmann::ordered_json StageConfig(const Plan& plan, const PlanRequest& request, const LaunchOptions& options,
                                   int64_t stage);

// Kubernetes objects: `leader_worker_set` picks the form.
std::vector<nlohmann::ordered_json> KubernetesObjects(const Plan& plan, const PlanRequest& request,
                                                      const LaunchOptions& options, bool leader_worker_set);

// Every file `strata plan --out DIR` writes (besides plan.json): the
// systemd configs and both Kubernetes forms, each saying it was generated
// by `generated_by` (the command line). Requires plan.fits.
std::vector<LaunchFile> LaunchFiles(const Plan& plan, const PlanRequest& request, const LaunchOptions& options,
                                    const std::string& generated_by);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_PLAN_LAUNCH_H_
