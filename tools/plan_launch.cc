#include "tools/plan_launch.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "tools/yaml_writer.h"

namespace strata::tools {
namespace {

using Json = nlohmann::ordered_json;

// Ports inside a pod (each pod has its own address).
constexpr int kPodData = 7000, kPodControl = 7001, kPodHealth = 7002, kPodTpStore = 7100, kPodMetrics = 9401;
// The router's, everywhere.
constexpr int kRouterGrpc = 50051, kRouterData = 50052, kRouterFleet = 50053, kRouterMetrics = 9400;
// On a host run by systemd, worker `local` (its GPU index) uses base + local.
constexpr int kHostData = 7000, kHostControl = 7100, kHostTpStore = 7200, kHostMetrics = 9401;

constexpr char kTlsMount[] = "/etc/strata/tls";
constexpr char kTokensMount[] = "/etc/strata/tokens";
constexpr char kPlanMount[] = "/etc/strata/plan";
constexpr char kLwsName[] = "strata-workers";
constexpr int64_t kGiB = int64_t{1} << 30;

bool Gpu(const PlanRequest& r) { return r.device == PlanDevice::kGpu; }

std::string Pipeline(int64_t replica) { return absl::StrCat("p", replica); }

std::string Layers(const StagePlanEntry& e) { return absl::StrCat(e.first_layer, ":", e.last_layer); }

std::string NodeHost(const LaunchOptions& o, int64_t node) {
  return node < static_cast<int64_t>(o.node_hosts.size()) ? o.node_hosts[node] : absl::StrCat("node-", node);
}

// Termination must outlast the router's drain and the worker's.
int64_t GraceSeconds(const LaunchOptions& o) { return o.drain_ms / 1000 + 15; }

// What a stage's worker needs whatever its rank and place.
void StageKeys(const Plan& p, const PlanRequest& r, const LaunchOptions& o, int64_t stage, Json* j) {
  (*j)["model"] = o.model_path;
  (*j)["model-name"] = o.model_name;
  (*j)["stage"] = stage;
  (*j)["num-stages"] = p.pp;
  (*j)["layers"] = Layers(p.stages[stage]);
  (*j)["tp-size"] = p.tp;
  (*j)["backend"] = Gpu(r) ? "cuda" : "cpu";
  if (!Gpu(r) && o.cpu_threads > 0) (*j)["threads"] = o.cpu_threads;
}

void KvKeys(const Plan& p, const PlanRequest& r, Json* j) {
  (*j)["kv-blocks"] = p.kv_blocks_per_worker;
  (*j)["block-size"] = r.block_size;
}

Json Labels(std::initializer_list<std::pair<const char*, std::string>> extra) {
  Json l = {{"app", "strata"}};
  for (const auto& [k, v] : extra) l[k] = v;
  return l;
}

Json Metadata(const std::string& name, Json labels) { return {{"name", name}, {"labels", std::move(labels)}}; }

Json EnvFromField(const char* name, const std::string& path) {
  return {{"name", name}, {"valueFrom", {{"fieldRef", {{"fieldPath", path}}}}}};
}

Json Env(const char* name, const std::string& value) { return {{"name", name}, {"value", value}}; }

Json Port(const char* name, int port) { return {{"name", name}, {"containerPort", port}}; }

// The kubelet's gRPC probe (grpc.health.v1 Check, plaintext) of `port`.
Json GrpcProbe(int port, int period_seconds, int failure_threshold) {
  return {{"grpc", {{"port", port}}}, {"periodSeconds", period_seconds}, {"failureThreshold", failure_threshold}};
}

// preStop: SIGTERM to the process (pid 1: the shell execs it), which
// drains, and wait until it has exited, so the pod is not killed mid-drain.
Json DrainHook() {
  return {{"preStop",
           {{"exec",
             {{"command", {"sh", "-c", "kill -TERM 1; while kill -0 1 2>/dev/null; do sleep 1; done"}}}}}}};
}

// Certificates (issue 15's TLS and mutual TLS) and bearer tokens, from
// Secrets that may be absent (optional) until TLS is switched on.
Json TlsVolume(const LaunchOptions& o) {
  return {{"name", "strata-tls"},
          {"secret",
           {{"secretName", "strata-tls"},
            {"optional", !o.tls},
            {"items",
             {{{"key", "ca.crt"}, {"path", "ca.crt"}},
              {{"key", "tls.crt"}, {"path", "tls.crt"}},
              {{"key", "tls.key"}, {"path", "tls.key"}}}}}}};
}

Json TokensVolume(const LaunchOptions& o) {
  return {{"name", "strata-tokens"}, {"secret", {{"secretName", "strata-tokens"}, {"optional", !o.tls}}}};
}

// The control plane's mutual TLS (router and workers alike).
void MtlsKeys(const LaunchOptions& o, Json* j) {
  if (!o.tls) return;
  (*j)["mtls-ca"] = absl::StrCat(kTlsMount, "/ca.crt");
  (*j)["mtls-cert"] = absl::StrCat(kTlsMount, "/tls.crt");
  (*j)["mtls-key"] = absl::StrCat(kTlsMount, "/tls.key");
}

Json ModelVolume(const LaunchOptions& o) {
  return {{"name", "model"}, {"persistentVolumeClaim", {{"claimName", o.model_pvc}, {"readOnly", true}}}};
}

Json Mount(const char* name, const std::string& path) {
  return {{"name", name}, {"mountPath", path}, {"readOnly", true}};
}

Json RouterService() {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", Metadata("strata-router", Labels({{"strata-role", "router"}, {"strata-metrics", "true"}}))},
          {"spec",
           {{"selector", Labels({{"strata-role", "router"}})},
            {"ports",
             {{{"name", "grpc"}, {"port", kRouterGrpc}, {"targetPort", kRouterGrpc}},
              {{"name", "fleet"}, {"port", kRouterFleet}, {"targetPort", kRouterFleet}},
              {{"name", "metrics"}, {"port", kRouterMetrics}, {"targetPort", kRouterMetrics}}}}}}};
}

Json RouterDeployment(const LaunchOptions& o) {
  std::string command = absl::StrCat(
      "exec strata-router --host \"$POD_IP\" --port ", kRouterGrpc, " --fleet-port ", kRouterFleet, " --data-port ",
      kRouterData, " --metrics-port ", kRouterMetrics, " --tokenizer ", o.model_path, " --model-name ", o.model_name,
      " --drain-ms ", o.drain_ms);
  if (o.tls) {
    absl::StrAppend(&command, " --tls-cert ", kTlsMount, "/tls.crt --tls-key ", kTlsMount, "/tls.key --auth-tokens ",
                    kTokensMount, "/tokens.json --mtls-ca ", kTlsMount, "/ca.crt --mtls-cert ", kTlsMount,
                    "/tls.crt --mtls-key ", kTlsMount, "/tls.key");
  }
  // The kubelet's gRPC probe speaks plaintext only: with TLS, readiness is
  // a TCP check.
  const Json readiness = o.tls ? Json{{"tcpSocket", {{"port", kRouterGrpc}}}, {"periodSeconds", 2}}
                               : Json{{"grpc", {{"port", kRouterGrpc}}}, {"periodSeconds", 2}};
  Json container = {
      {"name", "router"},
      {"image", o.image},
      {"command", {"sh", "-c"}},
      {"args", {command}},
      {"env", {EnvFromField("POD_IP", "status.podIP"), Env("UCX_TLS", "tcp,self")}},
      {"ports", {Port("grpc", kRouterGrpc), Port("fleet", kRouterFleet), Port("data", kRouterData),
                 Port("metrics", kRouterMetrics)}},
      // SERVING only while a pipeline is up (grpc.health.v1), so the
      // Service sends clients only to a router that can answer.
      {"readinessProbe", readiness},
      // Not SERVING is no reason to restart (no pipeline may be up yet).
      {"livenessProbe", {{"tcpSocket", {{"port", kRouterGrpc}}}, {"periodSeconds", 10}, {"failureThreshold", 3}}},
      {"lifecycle", DrainHook()},
      {"resources", {{"requests", {{"cpu", "4"}, {"memory", "8Gi"}}}}},
      {"volumeMounts", {Mount("model", o.model_path), Mount("strata-tls", kTlsMount),
                        Mount("strata-tokens", kTokensMount)}}};
  Json pod = {{"metadata",
               {{"labels", Labels({{"strata-role", "router"}})},
                {"annotations", {{"prometheus.io/scrape", "true"}, {"prometheus.io/port", std::to_string(kRouterMetrics)}}}}},
              {"spec",
               {{"terminationGracePeriodSeconds", GraceSeconds(o)},
                {"containers", {container}},
                {"volumes", {ModelVolume(o), TlsVolume(o), TokensVolume(o)}}}}};
  return {{"apiVersion", "apps/v1"},
          {"kind", "Deployment"},
          {"metadata", Metadata("strata-router", Labels({{"strata-role", "router"}}))},
          {"spec",
           {{"replicas", 1},
            {"selector", {{"matchLabels", Labels({{"strata-role", "router"}})}}},
            {"template", pod}}}};
}

// The workers' /metrics, for the ServiceMonitor (its name is the job:
// strata-worker, as the pod-annotation scrape config names it).
Json WorkerMetricsService() {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", Metadata("strata-worker", Labels({{"strata-role", "worker"}, {"strata-metrics", "true"}}))},
          {"spec",
           {{"clusterIP", "None"},
            {"selector", Labels({{"strata-role", "worker"}})},
            {"ports", {{{"name", "metrics"}, {"port", kPodMetrics}, {"targetPort", kPodMetrics}}}}}}};
}

Json PlanConfigMap(const Plan& p, const PlanRequest& r, const LaunchOptions& o) {
  Json data = Json::object();
  for (int64_t s = 0; s < p.pp; ++s) data[absl::StrCat("stage-", s, ".json")] = StageConfig(p, r, o, s).dump(2) + "\n";
  return {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", Metadata("strata-plan", Labels({}))}, {"data", data}};
}

Json WorkerPdb() {
  // One worker at a time: a pipeline loses a member, its requests move to
  // the other replicas, and no second eviction starts until it is back.
  return {{"apiVersion", "policy/v1"},
          {"kind", "PodDisruptionBudget"},
          {"metadata", Metadata("strata-workers", Labels({{"strata-role", "worker"}}))},
          {"spec", {{"maxUnavailable", 1}, {"selector", {{"matchLabels", Labels({{"strata-role", "worker"}})}}}}}};
}

Json ServiceMonitor() {
  return {{"apiVersion", "monitoring.coreos.com/v1"},
          {"kind", "ServiceMonitor"},
          {"metadata", Metadata("strata", Labels({}))},
          {"spec",
           {{"selector", {{"matchLabels", Labels({{"strata-metrics", "true"}})}}},
            {"endpoints", {{{"port", "metrics"}, {"path", "/metrics"}, {"interval", "15s"}}}}}}};
}

// The worker container of either form; `script` starts strata-worker.
Json WorkerContainer(const Plan& p, const PlanRequest& r, const LaunchOptions& o, const std::string& script,
                     const Json& extra_env) {
  Json env = {EnvFromField("POD_IP", "status.podIP")};
  for (const Json& e : extra_env) env.push_back(e);
  // UCX: RDMA (reliable connection verbs) where the NIC is there, TCP otherwise.
  env.push_back(Env("UCX_TLS", Gpu(r) && !o.rdma_resource.empty() ? "rc,tcp,self" : "tcp,self"));
  Json limits = Json::object(), requests = Json::object();
  if (Gpu(r)) {
    requests = {{"cpu", "4"}, {"memory", "32Gi"}};
    limits[o.gpu_resource] = 1;
    if (!o.rdma_resource.empty()) limits[o.rdma_resource] = 1;
    for (auto it = limits.begin(); it != limits.end(); ++it) requests[it.key()] = it.value();
  } else {
    // The host's worker: its weights, KV cache and reserve.
    const int64_t bytes = p.weight_bytes_per_device + p.stages.back().kv_bytes_per_device + p.reserve_bytes_per_device;
    requests = {{"cpu", std::to_string(o.cpu_threads > 0 ? o.cpu_threads : 1)},
                {"memory", absl::StrCat((bytes + kGiB - 1) / kGiB, "Gi")}};
  }
  Json resources = {{"requests", requests}};
  if (!limits.empty()) resources["limits"] = limits;
  Json c = {
      {"name", "worker"},
      {"image", o.image},
      {"command", {"sh", "-c"}},
      {"args", {script}},
      {"env", env},
      {"ports", {Port("data", kPodData), Port("control", kPodControl), Port("health", kPodHealth),
                 Port("tp-store", kPodTpStore), Port("metrics", kPodMetrics)}},
      // The worker's --health-port: plaintext grpc.health.v1 alone, so the
      // kubelet can probe it with TLS on or off (the control port is then
      // mutual TLS and takes only the router's certificate). NOT_SERVING
      // while loading, draining or failed, SERVING while serving steps. The
      // startup probe allows 30 minutes to load; a failed worker (the
      // router refused it) is restarted by liveness. The kubelet stops
      // liveness once the pod is deleted, so a preStop drain is not cut short.
      {"startupProbe", GrpcProbe(kPodHealth, 10, 180)},
      {"readinessProbe", GrpcProbe(kPodHealth, 5, 3)},
      {"livenessProbe", GrpcProbe(kPodHealth, 10, 3)},
      {"lifecycle", DrainHook()},
      {"resources", resources},
      {"volumeMounts",
       {Mount("model", o.model_path), Mount("strata-plan", kPlanMount), Mount("strata-tls", kTlsMount),
        {{"name", "dshm"}, {"mountPath", "/dev/shm"}}}}};
  // RDMA registers (pins) memory.
  if (Gpu(r) && !o.rdma_resource.empty()) c["securityContext"] = {{"capabilities", {{"add", {"IPC_LOCK"}}}}};
  return c;
}

Json WorkerVolumes(const LaunchOptions& o) {
  return {ModelVolume(o),
          {{"name", "strata-plan"}, {"configMap", {{"name", "strata-plan"}}}},
          TlsVolume(o),
          // NCCL's and UCX's shared-memory segments.
          {{"name", "dshm"}, {"emptyDir", {{"medium", "Memory"}, {"sizeLimit", "16Gi"}}}}};
}

Json WorkerPodMetadata(Json labels) {
  return {{"labels", std::move(labels)},
          {"annotations", {{"prometheus.io/scrape", "true"}, {"prometheus.io/port", std::to_string(kPodMetrics)}}}};
}

// The LeaderWorkerSet form: group g is pipeline pG; worker index w is
// stage w / TP, rank w % TP. Pods are named strata-workers-G (the leader,
// w = 0) and strata-workers-G-W, reachable as NAME.strata-workers.
Json LeaderWorkerSet(const Plan& p, const PlanRequest& r, const LaunchOptions& o) {
  std::string script = absl::StrCat(
      "g=\"$STRATA_GROUP_INDEX\"; w=\"$STRATA_WORKER_INDEX\"; tp=", p.tp, "; stages=", p.pp,
      "\n"
      "s=$((w / tp)); r=$((w % tp))\n"
      "pod() { if [ \"$1\" -eq 0 ]; then echo \"",
      kLwsName, "-$g.", kLwsName, "\"; else echo \"", kLwsName, "-$g-$1.", kLwsName,
      "\"; fi; }\n"
      "next=\"\"; if [ $((s + 1)) -lt \"$stages\" ]; then next=\"--next-stage=$(pod $((w + tp))):",
      kPodData, "\"; fi\n");
  if (p.tp > 1) absl::StrAppend(&script, "store=\"--tp-store=$(pod $((s * tp))):", kPodTpStore, "\"\n");
  absl::StrAppend(&script, "exec strata-worker --config \"", kPlanMount,
                  "/stage-$s.json\" --pipeline \"p$g\" --tp-rank \"$r\" --host \"$POD_IP\"",
                  p.tp > 1 ? " $store" : "", " $next\n");
  const Json env = {EnvFromField("STRATA_GROUP_INDEX", "metadata.labels['leaderworkerset.sigs.k8s.io/group-index']"),
                    EnvFromField("STRATA_WORKER_INDEX", "metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']")};
  Json pod = {{"metadata", WorkerPodMetadata(Labels({{"strata-role", "worker"}}))},
              {"spec",
               {{"terminationGracePeriodSeconds", GraceSeconds(o)},
                {"containers", {WorkerContainer(p, r, o, script, env)}},
                {"volumes", WorkerVolumes(o)}}}};
  Json meta = Metadata(kLwsName, Labels({{"strata-role", "worker"}}));
  // A stage that fills a node gets a node of its own: its TP group talks
  // over NVLink, never the network.
  const int64_t node = Gpu(r) ? std::min(r.devices_per_node, r.devices) : 1;
  if (p.tp == node && p.tp > 1) {
    meta["annotations"] = {{"leaderworkerset.sigs.k8s.io/subgroup-exclusive-topology", "kubernetes.io/hostname"}};
  }
  Json lwt = {{"size", p.tp * p.pp},
              // A member lost is a pipeline lost: restart the group together.
              {"restartPolicy", "RecreateGroupOnPodRestart"},
              {"subGroupPolicy", {{"subGroupSize", p.tp}}},
              {"workerTemplate", pod}};
  return {{"apiVersion", "leaderworkerset.x-k8s.io/v1"},
          {"kind", "LeaderWorkerSet"},
          {"metadata", meta},
          {"spec",
           {{"replicas", p.replicas},
            {"startupPolicy", "LeaderCreated"},
            {"rolloutStrategy",
             {{"type", "RollingUpdate"}, {"rollingUpdateConfiguration", {{"maxUnavailable", 1}, {"maxSurge", 0}}}}},
            {"networkConfig", {{"subdomainPolicy", "Shared"}}},
            {"leaderWorkerTemplate", lwt}}}};
}

std::string StsName(int64_t replica, int64_t stage) { return absl::StrCat("strata-p", replica, "-s", stage); }

// The StatefulSet form: stage s of replica p is StatefulSet strata-pP-sS
// of TP pods; the ordinal is the rank.
std::vector<Json> StageStatefulSet(const Plan& p, const PlanRequest& r, const LaunchOptions& o, int64_t replica,
                                   int64_t stage) {
  const std::string name = StsName(replica, stage);
  const std::string stage_label = absl::StrCat("p", replica, "-s", stage);
  std::string script = absl::StrCat("r=\"${HOSTNAME##*-}\"\nexec strata-worker --config ", kPlanMount, "/stage-",
                                    stage, ".json --pipeline ", Pipeline(replica),
                                    " --tp-rank \"$r\" --host \"$POD_IP\"");
  if (p.tp > 1) absl::StrAppend(&script, " --tp-store ", name, "-0.", name, ":", kPodTpStore);
  if (stage + 1 < p.pp) {
    const std::string next = StsName(replica, stage + 1);
    absl::StrAppend(&script, " --next-stage \"", next, "-$r.", next, ":", kPodData, "\"");
  }
  script += "\n";
  Json selector = Labels({{"strata-stage", stage_label}});
  Json spec = {{"terminationGracePeriodSeconds", GraceSeconds(o)}};
  if (p.tp > 1) {
    // The ranks of a stage share a node (NVLink for NCCL).
    spec["affinity"] = {{"podAffinity",
                         {{"requiredDuringSchedulingIgnoredDuringExecution",
                           {{{"labelSelector", {{"matchLabels", selector}}}, {"topologyKey", "kubernetes.io/hostname"}}}}}}};
  }
  spec["containers"] = {WorkerContainer(p, r, o, script, Json::array())};
  spec["volumes"] = WorkerVolumes(o);
  Json service = {{"apiVersion", "v1"},
                  {"kind", "Service"},
                  {"metadata", Metadata(name, Labels({{"strata-role", "peers"}}))},
                  {"spec",
                   {{"clusterIP", "None"},  // headless: a stable name per pod
                    {"publishNotReadyAddresses", true},
                    {"selector", selector},
                    {"ports",
                     {{{"name", "data"}, {"port", kPodData}}, {{"name", "tp-store"}, {"port", kPodTpStore}}}}}}};
  Json sts = {
      {"apiVersion", "apps/v1"},
      {"kind", "StatefulSet"},
      {"metadata", Metadata(name, Labels({{"strata-role", "worker"}}))},
      {"spec",
       {{"serviceName", name},
        {"replicas", p.tp},
        {"podManagementPolicy", "Parallel"},
        {"selector", {{"matchLabels", selector}}},
        {"template",
         {{"metadata",
           WorkerPodMetadata(Labels({{"strata-role", "worker"}, {"strata-stage", stage_label},
                                     {"strata-pipeline", Pipeline(replica)}}))},
          {"spec", spec}}}}}};
  return {service, sts};
}

}  // namespace

WorkerPlace PlaceWorker(const Plan& p, const PlanRequest& r, int64_t replica, int64_t stage, int64_t rank) {
  const int64_t node = Gpu(r) ? std::min(r.devices_per_node, r.devices) : 1;
  const int64_t device = replica * p.devices_per_replica + stage * p.tp + rank;
  return {device / node, device % node};
}

Json WorkerConfig(const Plan& p, const PlanRequest& r, const LaunchOptions& o, int64_t replica, int64_t stage,
                  int64_t rank) {
  const WorkerPlace at = PlaceWorker(p, r, replica, stage, rank);
  Json j;
  StageKeys(p, r, o, stage, &j);
  j["pipeline"] = Pipeline(replica);
  j["tp-rank"] = rank;
  if (p.tp > 1) {
    const WorkerPlace leader = PlaceWorker(p, r, replica, stage, 0);
    j["tp-store"] = absl::StrCat(NodeHost(o, leader.node), ":", kHostTpStore + leader.local);
  }
  j["host"] = NodeHost(o, at.node);
  j["data-port"] = kHostData + at.local;
  j["control-port"] = kHostControl + at.local;
  j["metrics-port"] = kHostMetrics + at.local;
  if (stage + 1 < p.pp) {
    const WorkerPlace next = PlaceWorker(p, r, replica, stage + 1, rank);
    j["next-stage"] = absl::StrCat(NodeHost(o, next.node), ":", kHostData + next.local);
  }
  j["router"] = absl::StrCat(NodeHost(o, 0), ":", kRouterFleet);
  KvKeys(p, r, &j);
  MtlsKeys(o, &j);
  return j;
}

Json StageConfig(const Plan& p, const PlanRequest& r, const LaunchOptions& o, int64_t stage) {
  Json j;
  StageKeys(p, r, o, stage, &j);
  j["data-port"] = kPodData;
  j["control-port"] = kPodControl;
  j["health-port"] = kPodHealth;  // the probes' port (WorkerContainer)
  j["metrics-port"] = kPodMetrics;
  j["router"] = absl::StrCat("strata-router:", kRouterFleet);
  KvKeys(p, r, &j);
  MtlsKeys(o, &j);
  return j;
}

std::vector<Json> KubernetesObjects(const Plan& p, const PlanRequest& r, const LaunchOptions& o,
                                    bool leader_worker_set) {
  std::vector<Json> docs = {RouterService(), RouterDeployment(o), PlanConfigMap(p, r, o), WorkerMetricsService()};
  if (leader_worker_set) {
    docs.push_back(LeaderWorkerSet(p, r, o));
  } else {
    for (int64_t replica = 0; replica < p.replicas; ++replica) {
      for (int64_t s = 0; s < p.pp; ++s) {
        for (Json& d : StageStatefulSet(p, r, o, replica, s)) docs.push_back(std::move(d));
      }
    }
  }
  docs.push_back(WorkerPdb());
  docs.push_back(ServiceMonitor());
  return docs;
}

std::vector<LaunchFile> LaunchFiles(const Plan& p, const PlanRequest& r, const LaunchOptions& o,
                                    const std::string& generated_by) {
  std::vector<LaunchFile> files;
  const std::string note = absl::StrCat("# Generated by ", generated_by, "\n# Regenerate rather than edit.\n");
  for (int64_t replica = 0; replica < p.replicas; ++replica) {
    for (int64_t s = 0; s < p.pp; ++s) {
      for (int64_t rank = 0; rank < p.tp; ++rank) {
        const WorkerPlace at = PlaceWorker(p, r, replica, s, rank);
        const std::string base =
            absl::StrCat("systemd/", NodeHost(o, at.node), "/worker-", Pipeline(replica), "-s", s, "-r", rank);
        files.push_back({base + ".json", WorkerConfig(p, r, o, replica, s, rank).dump(2) + "\n"});
        std::string env = note;
        if (Gpu(r)) absl::StrAppend(&env, "CUDA_VISIBLE_DEVICES=", at.local, "\n");
        absl::StrAppend(&env, "UCX_TLS=", Gpu(r) && !o.rdma_resource.empty() ? "rc,tcp,self" : "tcp,self", "\n");
        files.push_back({base + ".env", env});
      }
    }
  }
  files.push_back({absl::StrCat("systemd/", NodeHost(o, 0), "/router.env"),
                   absl::StrCat(note, "STRATA_HOST=", NodeHost(o, 0), "\nSTRATA_MODEL=", o.model_path,
                                "\nSTRATA_MODEL_NAME=", o.model_name, "\n")});
  files.push_back({"k8s/strata-lws.yaml", ToYamlDocuments(KubernetesObjects(p, r, o, true), note)});
  files.push_back({"k8s/strata-statefulsets.yaml", ToYamlDocuments(KubernetesObjects(p, r, o, false), note)});
  return files;
}

}  // namespace strata::tools
