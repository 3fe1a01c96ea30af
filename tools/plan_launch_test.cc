// The launch settings of a plan, read back by the worker's own flag parser
// (worker::ParseWorkerOptions, the code strata-worker runs): each systemd
// config, and each pod's stage config plus what its command line adds, is a
// valid worker, and together they form the planned pipelines: stages chained
// by --next-stage, layers tiling the model, the planned KV blocks everywhere.
#include "tools/plan_launch.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/stage_place.h"
#include "tools/yaml_writer.h"
#include "worker/worker_options.h"

namespace strata::tools {
namespace {

PlanRequest Request405b16() {
  PlanRequest r;
  r.model = *model::LlamaPreset("405b");
  r.model_label = "405b";
  r.devices = 16;
  r.memory_bytes = int64_t{80} << 30;
  r.bandwidth_bytes_per_s = 3.35e12;
  return r;
}

absl::StatusOr<worker::WorkerOptions> Parse(const nlohmann::ordered_json& config, std::vector<std::string> extra) {
  const std::string path = absl::StrCat(testing::TempDir(), "/worker.json");
  std::ofstream(path) << config.dump();
  std::vector<std::string> args = {"--config", path};
  args.insert(args.end(), extra.begin(), extra.end());
  return worker::ParseWorkerOptions(args);
}

TEST(PlanLaunchTest, SystemdConfigsFormThePlannedPipelines) {
  PlanRequest r = Request405b16();
  r.devices = 32;  // two replicas of TP 8 x PP 2
  absl::StatusOr<Plan> p = MakePlan(r);
  ASSERT_TRUE(p.ok() && p->fits) << p.status();
  ASSERT_EQ(p->replicas, 2);
  LaunchOptions o;
  o.node_hosts = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"};
  std::set<std::string> data_addresses;
  for (int64_t replica = 0; replica < p->replicas; ++replica) {
    std::map<std::string, int64_t> stage_of_data;  // data address -> stage
    std::vector<worker::WorkerOptions> workers;
    for (int64_t s = 0; s < p->pp; ++s) {
      for (int64_t rank = 0; rank < p->tp; ++rank) {
        absl::StatusOr<worker::WorkerOptions> w = Parse(WorkerConfig(*p, r, o, replica, s, rank), {});
        ASSERT_TRUE(w.ok()) << w.status();
        EXPECT_EQ(w->pipeline, absl::StrCat("p", replica));
        EXPECT_EQ(w->stage, s);
        EXPECT_EQ(w->tp_rank, rank);
        EXPECT_EQ(w->tp_size, p->tp);
        EXPECT_EQ(w->kv_blocks, p->kv_blocks_per_worker);
        EXPECT_EQ(w->backend.name, "cuda");
        // Each stage of a TP 8 plan is one node of its own.
        EXPECT_EQ(w->host, o.node_hosts[replica * 2 + s]);
        absl::StatusOr<model::StagePlace> place = model::StagePlace::CreateHalves(
            w->stage, w->num_stages, w->tp_rank, w->tp_size, r.model.num_layers, w->begin_half, w->end_half);
        ASSERT_TRUE(place.ok()) << place.status();
        EXPECT_EQ(place->first_layer(), p->stages[s].first_layer);
        EXPECT_EQ(place->last_layer(), p->stages[s].last_layer);
        const std::string data = absl::StrCat(w->host, ":", w->data_port);
        EXPECT_TRUE(data_addresses.insert(data).second) << data << " is used twice";
        stage_of_data[data] = s;
        workers.push_back(*w);
      }
    }
    for (const worker::WorkerOptions& w : workers) {
      if (w.stage + 1 < w.num_stages) {
        ASSERT_TRUE(stage_of_data.count(w.next_stage)) << w.next_stage;
        EXPECT_EQ(stage_of_data[w.next_stage], w.stage + 1);
      } else {
        EXPECT_TRUE(w.next_stage.empty());
      }
      EXPECT_EQ(w.router, "10.0.0.1:50053");
    }
  }
}

TEST(PlanLaunchTest, PodStageConfigsPlusTheirCommandLineAreValidWorkers) {
  const PlanRequest r = Request405b16();
  absl::StatusOr<Plan> p = MakePlan(r);
  ASSERT_TRUE(p.ok() && p->fits) << p.status();
  const LaunchOptions o;
  for (int64_t s = 0; s < p->pp; ++s) {
    std::vector<std::string> extra = {"--pipeline", "p0", "--tp-rank", "3", "--host", "10.1.2.3",
                                      "--tp-store", "strata-workers-0.strata-workers:7100"};
    if (s + 1 < p->pp) extra.insert(extra.end(), {"--next-stage", "strata-workers-0-11.strata-workers:7000"});
    absl::StatusOr<worker::WorkerOptions> w = Parse(StageConfig(*p, r, o, s), extra);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->begin_half, 2 * p->stages[s].first_layer);
    EXPECT_EQ(w->end_half, 2 * p->stages[s].last_layer);
    EXPECT_EQ(w->kv_blocks, p->kv_blocks_per_worker);
    EXPECT_EQ(w->metrics_port, 9401);
    EXPECT_EQ(w->health_port, 7002);
  }
  // With --tls the stage configs carry the control plane's certificates.
  LaunchOptions tls;
  tls.tls = true;
  absl::StatusOr<worker::WorkerOptions> secure =
      Parse(StageConfig(*p, r, tls, 1), {"--pipeline", "p0", "--tp-rank", "0", "--host", "10.1.2.3", "--tp-store",
                                         "strata-workers-0-8.strata-workers:7100"});
  ASSERT_TRUE(secure.ok()) << secure.status();
  EXPECT_EQ(StageConfig(*p, r, tls, 1)["mtls-cert"], "/etc/strata/tls/tls.crt");
  // Without the peers the pod's command adds, a stage config alone is refused:
  // the command line is part of the contract.
  EXPECT_FALSE(Parse(StageConfig(*p, r, o, 0), {}).ok());
}

// Every worker container of both forms, TLS on or off, is probed by the
// kubelet's gRPC probe on the port its stage config gives --health-port
// (plaintext whatever the control plane speaks).
TEST(PlanLaunchTest, WorkersAreProbedOnTheirHealthPort) {
  const PlanRequest r = Request405b16();
  absl::StatusOr<Plan> p = MakePlan(r);
  ASSERT_TRUE(p.ok() && p->fits) << p.status();
  for (const bool tls : {false, true}) {
    LaunchOptions o;
    o.tls = tls;
    const int port = StageConfig(*p, r, o, 0)["health-port"].get<int>();
    int containers = 0;
    for (const bool lws : {true, false}) {
      for (const auto& d : KubernetesObjects(*p, r, o, lws)) {
        nlohmann::ordered_json pod;
        if (d["kind"] == "LeaderWorkerSet") pod = d["spec"]["leaderWorkerTemplate"]["workerTemplate"];
        if (d["kind"] == "StatefulSet") pod = d["spec"]["template"];
        if (pod.is_null()) continue;
        const auto& c = pod["spec"]["containers"][0];
        for (const char* probe : {"startupProbe", "readinessProbe", "livenessProbe"}) {
          EXPECT_EQ(c[probe]["grpc"]["port"], port) << probe << " tls " << tls;
          EXPECT_FALSE(c[probe].contains("tcpSocket")) << probe;
        }
        bool declared = false;
        for (const auto& cp : c["ports"]) declared |= cp["name"] == "health" && cp["containerPort"] == port;
        EXPECT_TRUE(declared) << "no container port named health";
        ++containers;
      }
    }
    EXPECT_EQ(containers, 3);  // the LWS worker template and two StatefulSets
  }
}

TEST(PlanLaunchTest, KubernetesFormsHoldThePlan) {
  const PlanRequest r = Request405b16();
  absl::StatusOr<Plan> p = MakePlan(r);
  ASSERT_TRUE(p.ok() && p->fits) << p.status();
  const LaunchOptions o;
  std::map<std::string, int> kinds;
  for (const auto& d : KubernetesObjects(*p, r, o, /*leader_worker_set=*/true)) {
    ++kinds[d["kind"].get<std::string>()];
    if (d["kind"] == "LeaderWorkerSet") {
      EXPECT_EQ(d["spec"]["leaderWorkerTemplate"]["size"], 16);
      EXPECT_EQ(d["spec"]["replicas"], 1);
      const auto& c = d["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0];
      EXPECT_EQ(c["resources"]["limits"]["nvidia.com/gpu"], 1);
      EXPECT_EQ(c["resources"]["limits"]["rdma/rdma_shared_device_a"], 1);
    }
    if (d["kind"] == "Deployment") {
      EXPECT_GT(d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].get<int>(), o.drain_ms / 1000);
    }
  }
  EXPECT_EQ(kinds, (std::map<std::string, int>{{"ConfigMap", 1}, {"Deployment", 1}, {"LeaderWorkerSet", 1},
                                                {"PodDisruptionBudget", 1}, {"Service", 2}, {"ServiceMonitor", 1}}));
  kinds.clear();
  for (const auto& d : KubernetesObjects(*p, r, o, /*leader_worker_set=*/false)) {
    ++kinds[d["kind"].get<std::string>()];
    if (d["kind"] == "StatefulSet") EXPECT_EQ(d["spec"]["replicas"], 8);
  }
  EXPECT_EQ(kinds["StatefulSet"], 2);
  EXPECT_EQ(kinds["Service"], 4);  // router, worker metrics, one headless per stage
}

TEST(YamlWriterTest, WritesBlockYaml) {
  nlohmann::ordered_json j = {{"kind", "Service"},
                              {"n", 3},
                              {"flag", "true"},
                              {"port", "9401"},
                              {"list", {{{"a", 1}, {"b", "x y"}}, "-c", nlohmann::ordered_json::object()}},
                              {"script", "line 1\nline 2\n"},
                              {"empty", nlohmann::ordered_json::array()}};
  EXPECT_EQ(ToYaml(j),
            "kind: Service\n"
            "\"n\": 3\n"  // YAML 1.1 reads a bare n as false
            "flag: \"true\"\n"
            "port: \"9401\"\n"
            "list:\n"
            "- a: 1\n"
            "  b: \"x y\"\n"
            "- \"-c\"\n"
            "- {}\n"
            "script: |\n"
            "  line 1\n"
            "  line 2\n"
            "empty: []\n");
}

}  // namespace
}  // namespace strata::tools
