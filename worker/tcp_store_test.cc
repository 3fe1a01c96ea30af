// The TP group's rendezvous store: set and get across clients, and what a
// stranger on its port can do: a value announced but never sent costs the
// server no memory, oversized announcements drop the peer, with mutual TLS
// a client without a certificate of the CA is refused, and the store keeps
// serving its ranks.
#include "worker/tcp_store.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "base/local_pki.h"
#include "gtest/gtest.h"

namespace strata::worker {
namespace {

using std::chrono::milliseconds;

// Bytes malloc handed out, from its heap and in mmapped chunks.
size_t HeapInUse() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

int ConnectRaw(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  return fd;
}

TEST(TcpStoreTest, SetAndGetAcrossClients) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  auto a = TcpStoreClient::Connect("127.0.0.1", (*server)->port(), milliseconds(5000));
  auto b = TcpStoreClient::Connect("127.0.0.1", (*server)->port(), milliseconds(5000));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Set("group/key", "value").ok());
  auto got = (*b)->Get("group/key", milliseconds(1000));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "value");
}

TEST(TcpStoreTest, AStrangerCannotMakeItAllocate) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  const size_t before = HeapInUse();
  // Ten connections each announce a 16 MiB value: op, an empty key, then
  // the value's length, and nothing more (9 bytes).
  std::vector<int> fds;
  for (int i = 0; i < 10; ++i) {
    const int fd = ConnectRaw((*server)->port());
    const char header[9] = {'S', 0, 0, 0, 0, 0, 0, 0, 1};  // key length 0, value length 16 MiB
    ASSERT_EQ(::send(fd, header, sizeof(header), 0), 9);
    fds.push_back(fd);
  }
  std::this_thread::sleep_for(milliseconds(300));
  const size_t after = HeapInUse();
  EXPECT_LT(after, before + (8u << 20)) << "the server allocated for bytes that never came";
  // An announcement over the limit drops that peer; the ranks are still served.
  const int big = ConnectRaw((*server)->port());
  const char over[9] = {'S', 0, 0, 0, 0, 0, 0, 0, 2};  // 32 MiB
  ASSERT_EQ(::send(big, over, sizeof(over), 0), 9);
  char c;
  EXPECT_EQ(::recv(big, &c, 1, 0), 0) << "the server should close the connection";
  auto rank = TcpStoreClient::Connect("127.0.0.1", (*server)->port(), milliseconds(5000));
  ASSERT_TRUE(rank.ok());
  ASSERT_TRUE((*rank)->Set("k", "v").ok());
  EXPECT_EQ(*(*rank)->Get("k", milliseconds(1000)), "v");
  for (int fd : fds) ::close(fd);
  ::close(big);
}

// With mutual TLS the store answers only ranks holding a certificate of the
// fleet's CA: a plaintext client, a client without a certificate and one
// of another CA are refused, and the ranks are still served.
TEST(TcpStoreTest, MutualTlsRefusesUnauthenticatedClients) {
  const std::string tmp = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  for (const char* pki : {"/fleet", "/stranger"}) {
    ASSERT_TRUE(base::MakeLocalPki(tmp + pki, pki, {{"worker", "strata-worker"}}).ok());
  }
  auto load = [&](const std::string& pki) {
    auto m = base::LoadTls({tmp + pki + "/ca.crt", tmp + pki + "/worker.crt", tmp + pki + "/worker.key"}, "mtls", true);
    EXPECT_TRUE(m.ok()) << m.status();
    return *m;
  };
  const base::TlsMaterial fleet = load("/fleet"), stranger = load("/stranger");
  auto server = TcpStoreServer::Start("127.0.0.1", 0, &fleet);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  auto rank0 = TcpStoreClient::Connect("127.0.0.1", port, milliseconds(5000), &fleet);
  ASSERT_TRUE(rank0.ok()) << rank0.status();
  ASSERT_TRUE((*rank0)->Set("group/addr", "secret pair address").ok());

  // Plaintext: the bytes are not a TLS handshake; the server drops it, and
  // the client's request fails.
  auto plain = TcpStoreClient::Connect("127.0.0.1", port, milliseconds(2000));
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE((*plain)->Get("group/addr", milliseconds(200)).ok());
  // A certificate of another CA: the handshake fails on both sides.
  auto foreign = TcpStoreClient::Connect("127.0.0.1", port, milliseconds(2000), &stranger);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kUnauthenticated) << foreign.status();
  // Trusting the CA but holding no certificate.
  base::TlsMaterial anonymous = fleet;
  anonymous.cert_pem.clear();
  anonymous.key_pem.clear();
  EXPECT_FALSE(TcpStoreClient::Connect("127.0.0.1", port, milliseconds(2000), &anonymous).ok());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((*server)->refused() < 2 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_GE((*server)->refused(), 2);

  auto rank1 = TcpStoreClient::Connect("127.0.0.1", port, milliseconds(5000), &fleet);
  ASSERT_TRUE(rank1.ok()) << rank1.status();
  auto got = (*rank1)->Get("group/addr", milliseconds(1000));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "secret pair address");
}

}  // namespace
}  // namespace strata::worker
