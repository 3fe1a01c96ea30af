// One worker in this process: it registers with a Fleet service (played by
// the test) carrying its stage, rank, layers, KV capacity, addresses and
// epoch; answers Health and Stats; Abort drops queued steps; /metrics
// serves the worker series; --health-port serves grpc.health.v1 alone,
// plaintext (SERVING, then NOT_SERVING once a drain begins); and bad options
// are refused with the flag's name.
#include <sys/stat.h>
#include <unistd.h>
#include "worker/worker_server.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "model/make_model.h"
#include "strata/v1/worker.grpc.pb.h"
#include "testdata/grpc_health.grpc.pb.h"
#include "transport/ucx_transport.h"
#include "worker/worker_options.h"

namespace strata::worker {
namespace {

using std::chrono::milliseconds;
namespace pb = ::strata::v1;

class FakeFleet : public pb::Fleet::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const pb::RegisterRequest* req, pb::RegisterResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu);
    requests.push_back(*req);
    resp->set_result_address(result_address);
    cv.notify_all();
    return grpc::Status::OK;
  }
  std::mutex mu;
  std::condition_variable cv;
  std::vector<pb::RegisterRequest> requests;
  std::string result_address;
};

std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return "";
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  ::send(fd, req.data(), req.size(), 0);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

// The worker under test and the router's side of it: a Fleet service and a
// data-plane endpoint for results.
struct WorkerUnderTest {
  std::string dir;
  std::unique_ptr<transport::UcxTransport> results;
  FakeFleet fleet;
  std::unique_ptr<grpc::Server> fleet_server;
  std::unique_ptr<WorkerServer> server;
  std::unique_ptr<pb::Worker::Stub> stub;
  std::string ready_file;
};

void StartWorker(WorkerUnderTest* w, const std::vector<std::string>& extra = {}) {
  w->dir = absl::StrCat(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp", "/ws_", getpid());
  model::MakeModelOptions mo;
  mo.config = *model::LlamaPreset("tiny");
  ASSERT_TRUE(model::WriteRandomModel(model::PosixFileSystem(), w->dir, mo).ok());

  // The router's side: a Fleet service and a data-plane endpoint for results.
  auto results = transport::UcxTransport::Create({{"127.0.0.1", 0}});
  ASSERT_TRUE(results.ok());
  w->results = std::move(*results);
  w->fleet.result_address = w->results->address();
  int fleet_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &fleet_port);
  builder.RegisterService(&w->fleet);
  w->fleet_server = builder.BuildAndStart();
  ASSERT_NE(fleet_port, 0);

  std::vector<std::string> args = {"--model", w->dir, "--router", absl::StrCat("127.0.0.1:", fleet_port),
                                   "--metrics-port", "0", "--kv-memory-mb", "1", "--block-size", "8",
                                   "--backend", "reference", "--pipeline", "blue"};
  w->ready_file = w->dir + ".ready";
  args.insert(args.end(), {"--health-port", "0", "--ready-file", w->ready_file});
  args.insert(args.end(), extra.begin(), extra.end());
  auto options = ParseWorkerOptions(args);
  ASSERT_TRUE(options.ok()) << options.status();
  auto server = WorkerServer::Start(*options);
  ASSERT_TRUE(server.ok()) << server.status();
  w->server = std::move(*server);

  w->stub = pb::Worker::NewStub(grpc::CreateChannel(w->server->control_address(), grpc::InsecureChannelCredentials()));
}

void CheckRegistration(WorkerUnderTest& w) {
  {
    std::unique_lock<std::mutex> lock(w.fleet.mu);
    ASSERT_TRUE(w.fleet.cv.wait_for(lock, std::chrono::seconds(20), [&] { return !w.fleet.requests.empty(); }));
  }
  const pb::RegisterRequest& reg = w.fleet.requests[0];
  EXPECT_EQ(reg.identity().pipeline(), "blue");
  EXPECT_EQ(reg.identity().stage(), 0);
  EXPECT_EQ(reg.identity().tp_size(), 1);
  EXPECT_EQ(reg.identity().first_layer(), 0);
  EXPECT_EQ(reg.identity().last_layer(), 4);
  EXPECT_TRUE(reg.identity().has_embedding());
  EXPECT_TRUE(reg.identity().has_lm_head());
  EXPECT_EQ(reg.model_name(), absl::StrCat("ws_", getpid()));
  EXPECT_EQ(reg.shape().vocab_size(), 512);
  EXPECT_EQ(reg.kv_block_size(), 8);
  // tiny: 4 layers x K,V x 8 tokens x 2 KV heads x 16 x 4 bytes per block.
  EXPECT_EQ(reg.kv_num_blocks(), (1 << 20) / (4 * 2 * 8 * 2 * 16 * 4));
  EXPECT_EQ(reg.kv_num_blocks(), w.server->kv_blocks());
  EXPECT_EQ(reg.data_address(), w.server->data_address());
  EXPECT_EQ(reg.epoch(), w.server->epoch());
  EXPECT_GT(reg.weight_bytes(), 0u);

}

void CheckHealth(WorkerUnderTest& w) {
  {
    grpc::ClientContext ctx;
    pb::HealthResponse h;
    ASSERT_TRUE(w.stub->Health(&ctx, pb::HealthRequest(), &h).ok());
    EXPECT_EQ(h.state(), pb::HealthResponse::SERVING);
    EXPECT_EQ(h.epoch(), w.server->epoch());
  }

}

// grpc.health.v1's status for the whole server ("") at `address`.
grpc::health::v1::HealthCheckResponse::ServingStatus ProbeHealth(const std::string& address) {
  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckResponse r;
  const grpc::Status s = health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &r);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return r.status();
}

// The probes' port: SERVING, in the ready file, and nothing but the health
// service on it; the control port has no health service.
void CheckProbePort(WorkerUnderTest& w) {
  const std::string address = w.server->health_address();
  ASSERT_FALSE(address.empty());
  EXPECT_NE(address, w.server->control_address());
  EXPECT_EQ(ProbeHealth(address), grpc::health::v1::HealthCheckResponse::SERVING);
  std::stringstream ready;
  ready << std::ifstream(w.ready_file).rdbuf();
  EXPECT_NE(ready.str().find(absl::StrCat("\"health_address\":\"", address, "\"")), std::string::npos) << ready.str();

  auto worker_on_health = pb::Worker::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  pb::HealthResponse h;
  EXPECT_EQ(worker_on_health->Health(&ctx, pb::HealthRequest(), &h).error_code(), grpc::StatusCode::UNIMPLEMENTED);

  auto health_on_control = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(w.server->control_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx2;
  grpc::health::v1::HealthCheckResponse r;
  EXPECT_EQ(health_on_control->Check(&ctx2, grpc::health::v1::HealthCheckRequest(), &r).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

void RunStepsAndAbort(WorkerUnderTest& w) {
  // A step through the data plane; the result comes to the registered
  // result address.
  auto peer = w.results->Connect(*transport::ParseHostPort(w.server->data_address(), "worker"));
  ASSERT_TRUE(peer.ok()) << peer.status();
  auto send_plan = [&](uint64_t step, uint64_t seq) {
    transport::StepPlan plan;
    plan.step_id = step;
    plan.sequences.resize(1);
    plan.sequences[0].seq_id = seq;
    plan.sequences[0].num_tokens = 3;
    plan.sequences[0].block_table = {0};
    plan.sequences[0].sample = true;
    plan.token_ids = {1, 2, 3};
    const std::string bytes = transport::EncodePlan(plan);
    transport::WireHeader h;
    h.type = static_cast<uint16_t>(transport::MessageType::kStepPlan);
    h.step_id = step;
    h.plan_bytes = static_cast<uint32_t>(bytes.size());
    return w.results->Send(*peer, h, {{bytes.data(), bytes.size()}}, milliseconds(5000));
  };
  ASSERT_TRUE(send_plan(1, 7).ok());
  auto m = w.results->Receive(milliseconds(20000));
  ASSERT_TRUE(m.ok()) << m.status();
  auto r = transport::DecodeResult(m->payload(), m->header.payload_bytes);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->step_id, 1u);
  EXPECT_TRUE(r->error.empty()) << r->error;
  EXPECT_GE(r->sequences[0].token, 0);

  // Abort: steps up to 5 and sequence 9 are dropped, step 6 of seq 8 runs.
  {
    grpc::ClientContext ctx;
    pb::AbortRequest a;
    a.set_up_to_step_id(5);
    a.add_sequence_ids(9);
    pb::AbortResponse ar;
    ASSERT_TRUE(w.stub->Abort(&ctx, a, &ar).ok());
  }
  ASSERT_TRUE(send_plan(4, 8).ok());
  ASSERT_TRUE(send_plan(7, 9).ok());
  ASSERT_TRUE(send_plan(6, 8).ok());
  m = w.results->Receive(milliseconds(20000));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->header.step_id, 6u);
  EXPECT_EQ(w.results->Receive(milliseconds(200)).status().code(), absl::StatusCode::kDeadlineExceeded);

}

void CheckStatsMetricsAndDrain(WorkerUnderTest& w) {
  {
    grpc::ClientContext ctx;
    pb::StatsResponse st;
    ASSERT_TRUE(w.stub->Stats(&ctx, pb::StatsRequest(), &st).ok());
    EXPECT_EQ(st.prefill_steps(), 2u);
    EXPECT_EQ(st.steps_aborted(), 2u);
    EXPECT_EQ(st.rows(), 6u);
    EXPECT_EQ(st.kv_blocks_total(), w.server->kv_blocks());
    EXPECT_EQ(st.kv_blocks_used(), 1);
    EXPECT_GT(st.step_seconds(), 0.0);
  }

  const int metrics_port = transport::ParseHostPort(w.server->metrics_address(), "metrics")->port;
  const std::string scrape = HttpGet(metrics_port, "/metrics");
  EXPECT_NE(scrape.find("HTTP/1.1 200 OK"), std::string::npos);
  EXPECT_NE(scrape.find("strata_worker_steps_total{model="), std::string::npos) << scrape;
  EXPECT_NE(scrape.find("phase=\"prefill\"} 2"), std::string::npos) << scrape;
  EXPECT_NE(scrape.find("strata_worker_kv_blocks_total"), std::string::npos);
  EXPECT_NE(scrape.find("strata_worker_weight_bytes_loaded"), std::string::npos);
  EXPECT_NE(scrape.find("pipeline=\"blue\""), std::string::npos);
  EXPECT_NE(HttpGet(metrics_port, "/nope").find("404"), std::string::npos);

  {
    grpc::ClientContext ctx;
    pb::DrainResponse d;
    ASSERT_TRUE(w.stub->Drain(&ctx, pb::DrainRequest(), &d).ok());
    grpc::ClientContext ctx2;
    pb::HealthResponse h;
    ASSERT_TRUE(w.stub->Health(&ctx2, pb::HealthRequest(), &h).ok());
    EXPECT_EQ(h.state(), pb::HealthResponse::DRAINING);
    EXPECT_EQ(ProbeHealth(w.server->health_address()), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  }
  w.server->Drain(100, 5000);
  w.server->Wait();
  w.fleet_server->Shutdown();
}

TEST(WorkerServerTest, RegistersServesControlCallsAndMetrics) {
  WorkerUnderTest w;
  ASSERT_NO_FATAL_FAILURE(StartWorker(&w));
  ASSERT_NO_FATAL_FAILURE(CheckRegistration(w));
  ASSERT_NO_FATAL_FAILURE(CheckHealth(w));
  ASSERT_NO_FATAL_FAILURE(CheckProbePort(w));
  ASSERT_NO_FATAL_FAILURE(RunStepsAndAbort(w));
  ASSERT_NO_FATAL_FAILURE(CheckStatsMetricsAndDrain(w));
}

// A worker whose router stops calling Health (the router restarted and lost
// its fleet) registers again, with the same epoch.
TEST(WorkerServerTest, RegistersAgainWhenTheRouterStopsCalling) {
  WorkerUnderTest w;
  ASSERT_NO_FATAL_FAILURE(StartWorker(&w, {"--reregister-after-ms", "300"}));
  std::unique_lock<std::mutex> lock(w.fleet.mu);
  ASSERT_TRUE(w.fleet.cv.wait_for(lock, std::chrono::seconds(20), [&] { return w.fleet.requests.size() >= 2; }));
  EXPECT_EQ(w.fleet.requests[1].epoch(), w.fleet.requests[0].epoch());
  EXPECT_EQ(w.fleet.requests[1].data_address(), w.fleet.requests[0].data_address());
}

TEST(WorkerOptionsTest, RefusesBadFlagsNamingThem) {
  auto err = [](std::vector<std::string> args) { return std::string(ParseWorkerOptions(args).status().message()); };
  EXPECT_NE(err({}).find("--model"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--stage", "2", "--num-stages", "2"}).find("--stage"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--tp-size", "2"}).find("--tp-store"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--num-stages", "2"}).find("--next-stage"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--layers", "3:1"}).find("--layers"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--layers", "1.5:1.5"}).find("--layers"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--layers", "0:2.25"}).find("--layers"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--layers", "-1:2"}).find("--layers"), std::string::npos);
  auto halves = ParseWorkerOptions({"--model", "m", "--layers", "1.5:4"});
  ASSERT_TRUE(halves.ok()) << halves.status();
  EXPECT_EQ(halves->begin_half, 3);
  EXPECT_EQ(halves->end_half, 8);
  EXPECT_NE(err({"--model", "m", "--router", "nohost"}).find("--router"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--data-port", "70000"}).find("--data-port"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--health-port", "-2"}).find("--health-port"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--bogus", "1"}).find("--bogus"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--ucx-peer-errors", "maybe"}).find("--ucx-peer-errors"), std::string::npos);
  EXPECT_NE(err({"--model", "m", "--config", "/nonexistent.json"}).find("--config"), std::string::npos);
  auto ok = ParseWorkerOptions({"--model=/x/m/", "--tp-size=2", "--tp-rank=1", "--tp-store=10.0.0.1:9"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->model_name, "m");
  EXPECT_EQ(ok->tp_rank, 1);
}

TEST(WorkerOptionsTest, ModelRootKeepsTheModelInside) {
  const std::string tmp = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  const std::string root = tmp + "/models", inside = root + "/llama", outside = tmp + "/elsewhere";
  for (const std::string& d : {root, inside, outside}) mkdir(d.c_str(), 0755);
  symlink(outside.c_str(), (root + "/link").c_str());
  auto parse = [&](const std::string& model) { return ParseWorkerOptions({"--model=" + model, "--model-root=" + root}); };
  EXPECT_TRUE(parse(inside).ok());
  for (const std::string& escape : {outside, root + "/../elsewhere", root + "/link"}) {
    auto o = parse(escape);
    ASSERT_FALSE(o.ok()) << escape;
    EXPECT_NE(o.status().message().find("is outside --model-root"), std::string::npos) << o.status();
  }
  EXPECT_NE(parse(root + "/missing").status().message().find("does not exist"), std::string::npos);
}

TEST(WorkerOptionsTest, ConfigFileUnderFlags) {
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp", "/w.json");
  FILE* f = fopen(path.c_str(), "w");
  fputs(R"({"model": "/models/a", "stage": 1, "num-stages": 2, "tp-size": 1, "threads": 4})", f);
  fclose(f);
  auto o = ParseWorkerOptions({"--config", path, "--threads", "2"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->model_dir, "/models/a");
  EXPECT_EQ(o->stage, 1);
  EXPECT_EQ(o->backend.threads, 2);  // the command line wins
  f = fopen(path.c_str(), "w");
  fputs(R"({"model": "/m", "colour": "blue"})", f);
  fclose(f);
  EXPECT_NE(ParseWorkerOptions({"--config", path}).status().message().find("colour"), std::string::npos);
  f = fopen(path.c_str(), "w");
  fputs("not json", f);
  fclose(f);
  EXPECT_FALSE(ParseWorkerOptions({"--config", path}).ok());
}

TEST(WorkerServerTest, StartFailuresAreClear) {
  auto o = ParseWorkerOptions({"--model", "/nonexistent/model"});
  ASSERT_TRUE(o.ok());
  auto s = WorkerServer::Start(*o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/nonexistent/model"), std::string::npos) << s.status();
}

TEST(WorkerServerTest, HealthPortInUseIsClear) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  auto o = ParseWorkerOptions({"--model", "/nonexistent/model", "--health-port", std::to_string(ntohs(a.sin_port))});
  ASSERT_TRUE(o.ok()) << o.status();
  auto s = WorkerServer::Start(*o);
  ::close(fd);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--health-port"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace strata::worker
