// Security end to end, as an attacker on the same host would try it (issue
// 15): a `strata up --tls` cluster with its own token file; callers without
// TLS, without a token, with another CA's certificate, a forged
// registration and forged control calls are all refused on every port,
// tokens answer their codes, SIGHUP swaps the tokens without dropping a
// stream, and the cluster keeps serving throughout.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "base/local_pki.h"
#include "base/net.h"
#include "base/process.h"
#include "base/tls.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "model/make_model.h"
#include "nlohmann/json.hpp"
#include "strata/v1/inference.grpc.pb.h"
#include "tests/cluster/test_paths.h"
#include "strata/v1/worker.grpc.pb.h"
#include "testdata/grpc_health.grpc.pb.h"
#include "transport/ucx_transport.h"
#include "transport/wire.h"

namespace strata {
namespace {

using cluster_test::BinDir;
using cluster_test::Slurp;
using cluster_test::TempDir;

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using grpc::StatusCode;

constexpr char kFull[] = "full-token-0123456789";
constexpr char kRotated[] = "rotated-token-0123456789";

void WriteTokens(const std::string& path, const std::string& full_token) {
  std::ofstream(path) << nlohmann::json(
                             {{"tokens",
                               {{{"name", "full"}, {"token", full_token}, {"models", {"*"}}, {"max_priority", 10}},
                                {{"name", "other-model"}, {"token", "other-model-token-0123"}, {"models", {"mistral"}}},
                                {{"name", "slow"}, {"token", "slow-token-0123456789"}, {"models", {"*"}},
                                 {"requests_per_second", 0.2}},
                                {{"name", "single"}, {"token", "single-token-0123456789"}, {"models", {"*"}},
                                 {"max_concurrent", 1}}}}})
                             .dump();
}

v1::GenerateRequest Request(int max_tokens) {
  v1::GenerateRequest r;
  for (int32_t t : {5, 9, 14, 3}) r.add_prompt_ids(t);
  r.mutable_stop()->set_max_tokens(max_tokens);
  r.mutable_stop()->set_ignore_eos(true);
  return r;
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = absl::StrCat(TempDir(), "/security_", getpid());
    const std::string model = dir_ + "_model";
    model::MakeModelOptions mo;
    mo.config = *model::LlamaPreset("tiny");
    ASSERT_TRUE(model::WriteRandomModel(model::PosixFileSystem(), model, mo).ok());
    // Another CA, whose certificates the cluster must not trust.
    ASSERT_TRUE(base::MakeLocalPki(dir_ + "_stranger", "stranger CA",
                                   {{"router", "strata-router"}, {"worker", "strata-worker"}})
                    .ok());
    tokens_ = dir_ + "_tokens.json";
    WriteTokens(tokens_, kFull);
    std::ofstream(dir_ + "_token") << kFull << "\n";
    const std::string ready = dir_ + ".ready";
    base::ProcessOptions o;
    o.argv = {BinDir() + "/tools/strata", "up", "--model", model, "--bin-dir", BinDir(), "--log-dir", dir_,
              "--ready-file", ready, "--stages", "2", "--http-port", "0", "--tls", "--auth-tokens", tokens_,
              "--token-file", dir_ + "_token"};
    o.log = dir_ + ".up.log";
    auto p = base::Process::Spawn(std::move(o));
    ASSERT_TRUE(p.ok()) << p.status();
    up_ = new base::Process(std::move(*p));
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    while (access(ready.c_str(), F_OK) != 0) {
      ASSERT_TRUE(up_->Running()) << "strata up exited:\n" << Slurp(dir_ + ".up.log");
      ASSERT_LT(Clock::now(), deadline) << "strata up not ready:\n" << Slurp(dir_ + ".up.log");
      std::this_thread::sleep_for(milliseconds(50));
    }
    info_ = new nlohmann::json(nlohmann::json::parse(Slurp(ready)));
    ca_ = (*info_)["ca"].get<std::string>();
  }
  static void TearDownTestSuite() {
    if (up_ == nullptr) return;
    up_->Signal(SIGINT);
    EXPECT_TRUE(up_->Wait(std::chrono::seconds(60)).ok());
    delete up_;
    delete info_;
  }

  static std::string Address(const char* key) { return (*info_)[key].get<std::string>(); }
  static std::string Tls(const std::string& name) { return absl::StrCat((*info_)["tls_dir"].get<std::string>(), "/", name); }
  static std::string Stranger(const std::string& name) { return absl::StrCat(dir_, "_stranger/", name); }

  // A channel trusting the cluster's CA, presenting `cert` (empty: none).
  static std::shared_ptr<grpc::Channel> Channel(const std::string& address, const std::string& cert_base = "",
                                                const std::string& ca = "") {
    base::TlsMaterial m;
    m.ca_pem = Slurp(ca.empty() ? ca_ : ca);
    if (!cert_base.empty()) {
      m.cert_pem = Slurp(cert_base + ".crt");
      m.key_pem = Slurp(cert_base + ".key");
    }
    return grpc::CreateChannel(address, base::ChannelCredentials(&m));
  }

  static grpc::Status Generate(v1::Inference::Stub* stub, const std::string& token, const v1::GenerateRequest& req,
                               int* tokens = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!token.empty()) ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    auto reader = stub->Generate(&ctx, req);
    v1::GenerateResponse m;
    int n = 0;
    while (reader->Read(&m)) n += m.tokens_size();
    if (tokens) *tokens = n;
    return reader->Finish();
  }

  // A worker's control address, from its log.
  static std::string ControlAddress(const std::string& log) {
    std::smatch m;
    const std::string text = Slurp(log);
    if (!std::regex_search(text, m, std::regex("control (127\\.0\\.0\\.1:[0-9]+)"))) return "";
    return m[1];
  }

  static inline std::string dir_, tokens_, ca_;
  static inline base::Process* up_ = nullptr;
  static inline nlohmann::json* info_ = nullptr;
};

TEST_F(SecurityTest, ThePublicPortNeedsTlsAndAToken) {
  auto secure = v1::Inference::NewStub(Channel(Address("address")));
  int n = 0;
  grpc::Status s = Generate(secure.get(), kFull, Request(4), &n);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(n, 4);
  // Plaintext on the TLS port, and a client that trusts another CA.
  auto plain = v1::Inference::NewStub(grpc::CreateChannel(Address("address"), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(Generate(plain.get(), kFull, Request(4)).error_code(), StatusCode::UNAVAILABLE);
  auto fooled = v1::Inference::NewStub(Channel(Address("address"), "", Stranger("ca.crt")));
  EXPECT_EQ(Generate(fooled.get(), kFull, Request(4)).error_code(), StatusCode::UNAVAILABLE);
  // Tokens and their rules.
  s = Generate(secure.get(), "", Request(4));
  EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_EQ(Generate(secure.get(), "made-up-token-0123456789", Request(4)).error_code(), StatusCode::UNAUTHENTICATED);
  s = Generate(secure.get(), "other-model-token-0123", Request(4));
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << s.error_message();
  v1::GenerateRequest urgent = Request(4);
  urgent.set_priority(11);
  EXPECT_EQ(Generate(secure.get(), kFull, urgent).error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(Generate(secure.get(), "slow-token-0123456789", Request(2)).ok());
  s = Generate(secure.get(), "slow-token-0123456789", Request(2));
  EXPECT_EQ(s.error_code(), StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("requests per second"), std::string::npos);
  // One stream at a time for "single": the first is admitted (its first
  // tokens came) and still running when the second asks.
  {
    grpc::ClientContext first;
    first.AddMetadata("authorization", "Bearer single-token-0123456789");
    auto reader = secure->Generate(&first, Request(4000));
    v1::GenerateResponse m;
    ASSERT_TRUE(reader->Read(&m));
    s = Generate(secure.get(), "single-token-0123456789", Request(2));
    EXPECT_EQ(s.error_code(), StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    EXPECT_NE(s.error_message().find("concurrent"), std::string::npos);
    first.TryCancel();
    while (reader->Read(&m)) {
    }
    reader->Finish();
  }
  // Its slot is free once the first ended.
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (!Generate(secure.get(), "single-token-0123456789", Request(2)).ok()) {
    ASSERT_LT(Clock::now(), until) << "the cancelled stream kept its slot";
    std::this_thread::sleep_for(milliseconds(50));
  }
  // Calls without a model need a token too.
  grpc::ClientContext ctx;
  v1::ListModelsResponse lm;
  EXPECT_EQ(secure->ListModels(&ctx, v1::ListModelsRequest(), &lm).error_code(), StatusCode::UNAUTHENTICATED);
}

TEST_F(SecurityTest, TheHttpApiNeedsTlsAndAToken) {
  const std::string hp = Address("http_address");
  const std::string host = hp.substr(0, hp.find(':'));
  const int port = std::stoi(hp.substr(hp.find(':') + 1));
  const std::string body = R"({"prompt": [5, 9, 14], "max_tokens": 3})";
  httplib::SSLClient https(host, port);
  https.set_ca_cert_path(ca_.c_str());
  https.enable_server_certificate_verification(true);
  auto r = https.Post("/v1/completions", {{"Authorization", absl::StrCat("Bearer ", kFull)}}, body, "application/json");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200) << r->body;
  r = https.Post("/v1/completions", body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401) << r->body;
  EXPECT_NE(r->body.find("authentication_error"), std::string::npos) << r->body;
  r = https.Post("/v1/completions", {{"Authorization", "Bearer other-model-token-0123"}}, body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403) << r->body;
  httplib::Client plain(host, port);
  plain.set_connection_timeout(2);
  EXPECT_FALSE(plain.Post("/v1/completions", body, "application/json")) << "plain HTTP on the HTTPS port answered";
}

TEST_F(SecurityTest, TheFleetPortTakesOnlyWorkersOfTheCa) {
  v1::RegisterRequest forged;
  forged.mutable_identity()->set_pipeline("evil");
  forged.mutable_identity()->set_num_stages(1);
  forged.mutable_identity()->set_tp_size(1);
  forged.set_kv_num_blocks(int64_t{1} << 40);
  forged.set_kv_block_size(16);
  auto call = [&](std::shared_ptr<grpc::Channel> ch) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::RegisterResponse resp;
    return v1::Fleet::NewStub(ch)->Register(&ctx, forged, &resp);
  };
  const std::string fleet = Address("fleet_address");
  EXPECT_EQ(call(grpc::CreateChannel(fleet, grpc::InsecureChannelCredentials())).error_code(), StatusCode::UNAVAILABLE);
  EXPECT_EQ(call(Channel(fleet)).error_code(), StatusCode::UNAVAILABLE);  // no certificate
  EXPECT_EQ(call(Channel(fleet, Stranger("worker"))).error_code(), StatusCode::UNAVAILABLE);  // another CA's
  // A certificate of the CA gets as far as the checks, which refuse the absurd values.
  grpc::Status s = call(Channel(fleet, Tls("worker")));
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << s.error_message();
  // And the public port has no Fleet service at all.
  EXPECT_EQ(call(Channel(Address("address"), Tls("worker"))).error_code(), StatusCode::UNIMPLEMENTED);
}

TEST_F(SecurityTest, WorkersAnswerControlCallsOnlyFromTheRouter) {
  for (const char* log : {"/worker_p0_s0_r0.log", "/worker_p0_s1_r0.log"}) {
    const std::string control = ControlAddress(dir_ + log);
    ASSERT_FALSE(control.empty()) << Slurp(dir_ + log);
    auto abort = [&](std::shared_ptr<grpc::Channel> ch) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      v1::AbortRequest req;
      req.set_up_to_step_id(~uint64_t{0});
      v1::AbortResponse resp;
      return v1::Worker::NewStub(ch)->Abort(&ctx, req, &resp);
    };
    auto drain = [&](std::shared_ptr<grpc::Channel> ch) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      v1::DrainResponse resp;
      return v1::Worker::NewStub(ch)->Drain(&ctx, v1::DrainRequest(), &resp);
    };
    EXPECT_EQ(abort(grpc::CreateChannel(control, grpc::InsecureChannelCredentials())).error_code(),
              StatusCode::UNAVAILABLE);
    EXPECT_EQ(abort(Channel(control)).error_code(), StatusCode::UNAVAILABLE);
    EXPECT_EQ(drain(Channel(control, Stranger("router"))).error_code(), StatusCode::UNAVAILABLE);
    // A worker's certificate, signed by the right CA, is still not the router's.
    grpc::Status s = abort(Channel(control, Tls("worker")));
    EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << s.error_message();
    EXPECT_EQ(drain(Channel(control, Tls("worker"))).error_code(), StatusCode::PERMISSION_DENIED);
    // The router's certificate is answered.
    grpc::ClientContext ctx;
    v1::HealthResponse health;
    ASSERT_TRUE(v1::Worker::NewStub(Channel(control, Tls("router")))->Health(&ctx, v1::HealthRequest(), &health).ok());
    EXPECT_EQ(health.state(), v1::HealthResponse::SERVING);
  }
  // Nothing above reached the pipeline.
  auto stub = v1::Inference::NewStub(Channel(Address("address")));
  int n = 0;
  ASSERT_TRUE(Generate(stub.get(), kFull, Request(6), &n).ok());
  EXPECT_EQ(n, 6);
}

// A worker's data port hands its UCX address only to a peer with a
// certificate of the CA; and a message without the fleet's data key (from
// such a peer that never registered) is dropped and counted; the pipeline
// keeps serving.
TEST_F(SecurityTest, UnsignedDataPlaneMessagesAreDroppedAndCounted) {
  const std::string log = Slurp(dir_ + "/worker_p0_s0_r0.log");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex("data (127\\.0\\.0\\.1):([0-9]+)"))) << log;
  const std::string control = ControlAddress(dir_ + "/worker_p0_s0_r0.log");
  auto rejected = [&] {
    grpc::ClientContext ctx;
    v1::StatsResponse st;
    EXPECT_TRUE(v1::Worker::NewStub(Channel(control, Tls("router")))->Stats(&ctx, v1::StatsRequest(), &st).ok());
    return st.messages_rejected();
  };
  const uint64_t before = rejected();
  const transport::HostPort data_port{m[1], std::stoi(m[2])};
  transport::UcxOptions uo;
  uo.listen = {"127.0.0.1", 0};
  uo.connect_timeout = milliseconds(2000);
  auto stranger = transport::UcxTransport::Create(uo);
  ASSERT_TRUE(stranger.ok()) << stranger.status();
  EXPECT_FALSE((*stranger)->Connect(data_port).ok()) << "a plaintext peer got the worker's UCX address";
  auto worker_cert = base::LoadTls({Tls("ca.crt"), Tls("worker.crt"), Tls("worker.key")}, "mtls", true);
  ASSERT_TRUE(worker_cert.ok()) << worker_cert.status();
  uo.tls = &*worker_cert;
  auto attacker = transport::UcxTransport::Create(uo);
  ASSERT_TRUE(attacker.ok()) << attacker.status();
  auto peer = (*attacker)->Connect(data_port);
  ASSERT_TRUE(peer.ok()) << peer.status();
  transport::StepPlan plan;
  plan.step_id = 1u << 30;
  transport::PlanSequence seq;
  seq.seq_id = 77;
  seq.num_tokens = 1;
  seq.block_table = {0};
  seq.sample = true;
  plan.sequences.push_back(seq);
  plan.token_ids = {5};
  const std::string encoded = transport::EncodePlan(plan);
  transport::WireHeader h;
  h.type = static_cast<uint16_t>(transport::MessageType::kStepPlan);
  h.step_id = plan.step_id;
  h.plan_bytes = static_cast<uint32_t>(encoded.size());
  for (int i = 0; i < 3; ++i) {
    h.key_id = i;  // none, then made-up key ids; the tags are zero
    ASSERT_TRUE((*attacker)->Send(*peer, h, {{encoded.data(), encoded.size()}}, milliseconds(2000)).ok());
  }
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (rejected() < before + 3) {
    ASSERT_LT(Clock::now(), deadline) << "the forged messages were not counted";
    std::this_thread::sleep_for(milliseconds(50));
  }
  auto stub = v1::Inference::NewStub(Channel(Address("address")));
  int n = 0;
  ASSERT_TRUE(Generate(stub.get(), kFull, Request(5), &n).ok());
  EXPECT_EQ(n, 5);
}

// --auth-health: health (gRPC and HTTP) needs a token too. A router of its
// own, with the cluster's certificate and tokens.
TEST_F(SecurityTest, AuthHealthPutsHealthBehindTheToken) {
  const int port = base::PickFreePort(), http = base::PickFreePort();
  base::ProcessOptions o;
  o.argv = {BinDir() + "/router/strata-router", "--port", absl::StrCat(port), "--http-port", absl::StrCat(http),
            "--tls-cert", Tls("router.crt"), "--tls-key", Tls("router.key"), "--auth-tokens", tokens_,
            "--auth-health"};
  o.log = dir_ + "_auth_health_router.log";
  auto router = base::Process::Spawn(std::move(o));
  ASSERT_TRUE(router.ok()) << router.status();
  const std::string address = absl::StrCat("127.0.0.1:", port);
  auto health = grpc::health::v1::Health::NewStub(Channel(address));
  auto check = [&](const std::string& token) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    if (!token.empty()) ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    grpc::health::v1::HealthCheckResponse resp;
    return health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp);
  };
  const auto until = Clock::now() + std::chrono::seconds(20);
  while (check(kFull).error_code() == StatusCode::UNAVAILABLE) {  // still starting
    ASSERT_LT(Clock::now(), until) << Slurp(dir_ + "_auth_health_router.log");
    std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_TRUE(check(kFull).ok());
  grpc::Status s = check("");
  EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_EQ(check("made-up-token-0123456789").error_code(), StatusCode::UNAUTHENTICATED);
  httplib::SSLClient https("127.0.0.1", http);
  https.set_ca_cert_path(ca_.c_str());
  https.enable_server_certificate_verification(true);
  auto r = https.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = https.Get("/health", {{"Authorization", absl::StrCat("Bearer ", kFull)}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  router->Signal(SIGTERM);
  EXPECT_TRUE(router->Wait(std::chrono::seconds(30)).ok());
}

TEST_F(SecurityTest, SighupSwapsTheTokensWithoutDroppingAStream) {
  auto stub = v1::Inference::NewStub(Channel(Address("address")));
  int n = 0;
  auto running = std::async(std::launch::async, [&] { return Generate(stub.get(), kFull, Request(300), &n); });
  std::this_thread::sleep_for(milliseconds(300));
  WriteTokens(tokens_, kRotated);
  ASSERT_EQ(::kill(static_cast<pid_t>((*info_)["router_pid"].get<int64_t>()), SIGHUP), 0);
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!Generate(stub.get(), kRotated, Request(1)).ok()) {
    ASSERT_LT(Clock::now(), deadline) << "the rotated token was never accepted";
    std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_EQ(Generate(stub.get(), kFull, Request(1)).error_code(), StatusCode::UNAUTHENTICATED);
  grpc::Status s = running.get();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(n, 300);
  WriteTokens(tokens_, kFull);  // as the other cases expect
  ::kill(static_cast<pid_t>((*info_)["router_pid"].get<int64_t>()), SIGHUP);
  const auto back = Clock::now() + std::chrono::seconds(10);
  while (!Generate(stub.get(), kFull, Request(1)).ok()) {
    ASSERT_LT(Clock::now(), back);
    std::this_thread::sleep_for(milliseconds(100));
  }
}

}  // namespace
}  // namespace strata
