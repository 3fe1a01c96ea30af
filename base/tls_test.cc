#include "base/tls.h"

#include <cstdlib>
#include <fstream>

#include "base/local_pki.h"
#include "gtest/gtest.h"
#include "testdata/echo.grpc.pb.h"

namespace strata::base {
namespace {

namespace td = strata::testdata;

class EchoService : public td::Echo::Service {
 public:
  grpc::Status Say(grpc::ServerContext* ctx, const td::EchoRequest* req, td::EchoReply* resp) override {
    resp->set_text(req->text() + "|" + PeerCommonName(*ctx->auth_context()));
    return grpc::Status::OK;
  }
};

std::string Dir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return std::string(tmp ? tmp : "/tmp") + "/" + name;
}

// Two independent CAs, each signing a server, a worker and a caller.
class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (const char* pki : {"a", "b"}) {
      ASSERT_TRUE(MakeLocalPki(Dir(pki), std::string("ca-") + pki,
                               {{"server", "strata-router"}, {"worker", "strata-worker"}, {"caller", "svc"}})
                      .ok());
    }
  }
  static TlsFiles Files(const std::string& pki, const std::string& name, bool ca = true) {
    return {ca ? Dir(pki) + "/ca.crt" : "", Dir(pki) + "/" + name + ".crt", Dir(pki) + "/" + name + ".key"};
  }
  static TlsMaterial Load(const std::string& pki, const std::string& name) {
    auto m = LoadTls(Files(pki, name), "mtls", true);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *m : TlsMaterial{};
  }

  // Starts an Echo server with `creds` (and `processor`, if any).
  void Serve(std::shared_ptr<grpc::ServerCredentials> creds) {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", creds, &port_);
    b.RegisterService(&service_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  grpc::Status Call(std::shared_ptr<grpc::ChannelCredentials> creds, std::string* text = nullptr) {
    auto stub = td::Echo::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    td::EchoRequest req;
    req.set_text("hi");
    td::EchoReply resp;
    grpc::Status s = stub->Say(&ctx, req, &resp);
    if (text) *text = resp.text();
    return s;
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  EchoService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(TlsTest, LoadsAndNamesTheCertificate) {
  TlsMaterial m = Load("a", "worker");
  EXPECT_EQ(m.common_name, "strata-worker");
  EXPECT_NE(m.ca_pem.find("BEGIN CERTIFICATE"), std::string::npos);
}

TEST_F(TlsTest, RefusesBadFilesWithTheFlagName) {
  TlsFiles f = Files("a", "worker");
  f.key = Dir("a") + "/server.key";  // another certificate's key
  auto s = LoadTls(f, "mtls", true);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--mtls-key"), std::string::npos) << s.status();
  EXPECT_NE(s.status().message().find("is not the key"), std::string::npos) << s.status();

  f = Files("a", "worker");
  f.ca = Dir("b") + "/ca.crt";  // another CA
  s = LoadTls(f, "mtls", true);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("does not chain to the CA"), std::string::npos) << s.status();

  f = Files("a", "worker");
  f.cert = Dir("nowhere.crt");
  s = LoadTls(f, "tls", false);
  EXPECT_NE(s.status().message().find("--tls-cert: cannot read"), std::string::npos) << s.status();

  std::ofstream(Dir("garbage.pem")) << "not a certificate";
  f = Files("a", "worker");
  f.ca = Dir("garbage.pem");
  s = LoadTls(f, "mtls", true);
  EXPECT_NE(s.status().message().find("is not a PEM file"), std::string::npos) << s.status();

  EXPECT_FALSE(LoadTls({"", Dir("a") + "/worker.crt", ""}, "tls", false).ok());  // cert without key
  EXPECT_FALSE(LoadTls({"", Dir("a") + "/worker.crt", Dir("a") + "/worker.key"}, "mtls", true).ok());  // no CA
}

TEST_F(TlsTest, MutualTlsAcceptsOnlyPeersOfTheSameCa) {
  TlsMaterial server = Load("a", "server");
  Serve(ServerCredentials(&server, ClientCerts::kRequired));
  TlsMaterial worker = Load("a", "worker");
  std::string text;
  grpc::Status s = Call(ChannelCredentials(&worker), &text);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(text, "hi|strata-worker");

  TlsMaterial stranger = Load("b", "worker");  // signed by another CA
  EXPECT_EQ(Call(ChannelCredentials(&stranger)).error_code(), grpc::StatusCode::UNAVAILABLE);
  // Trusting the server's CA but holding no certificate of its own.
  TlsMaterial no_cert{server.ca_pem, "", "", ""};
  EXPECT_EQ(Call(ChannelCredentials(&no_cert)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Call(grpc::InsecureChannelCredentials()).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, ClientTrustsOnlyAServerOfItsCa) {
  TlsMaterial server = Load("b", "server");
  Serve(ServerCredentials(&server, ClientCerts::kNone));
  TlsMaterial caller = Load("a", "caller");
  EXPECT_EQ(Call(ChannelCredentials(&caller)).error_code(), grpc::StatusCode::UNAVAILABLE);
  TlsMaterial trusting{server.ca_pem, "", "", ""};
  EXPECT_TRUE(Call(ChannelCredentials(&trusting)).ok());
}

TEST_F(TlsTest, OptionalClientCertificatesAreVerifiedWhenPresented) {
  TlsMaterial server = Load("a", "server");
  Serve(ServerCredentials(&server, ClientCerts::kOptional));
  TlsMaterial anonymous{server.ca_pem, "", "", ""};
  std::string text;
  ASSERT_TRUE(Call(ChannelCredentials(&anonymous), &text).ok());
  EXPECT_EQ(text, "hi|");
  TlsMaterial caller = Load("a", "caller");
  ASSERT_TRUE(Call(ChannelCredentials(&caller), &text).ok());
  EXPECT_EQ(text, "hi|svc");
  TlsMaterial stranger = Load("b", "caller");
  stranger.ca_pem = server.ca_pem;  // trusts the server, but its own certificate is from CA b
  EXPECT_EQ(Call(ChannelCredentials(&stranger)).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, PeerNameCheckAnswersOnlyTheNamedPeer) {
  TlsMaterial server = Load("a", "worker");
  auto creds = ServerCredentials(&server, ClientCerts::kRequired);
  creds->SetAuthMetadataProcessor(std::make_shared<PeerNameCheck>("strata-router"));
  Serve(creds);
  TlsMaterial router = Load("a", "server");  // CN strata-router
  EXPECT_TRUE(Call(ChannelCredentials(&router)).ok());
  TlsMaterial other_worker = Load("a", "caller");  // same CA, another name
  grpc::Status s = Call(ChannelCredentials(&other_worker));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("'svc'"), std::string::npos) << s.error_message();
}

}  // namespace
}  // namespace strata::base
