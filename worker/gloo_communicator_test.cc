// The Gloo communicator among threads of this process, over TCP on
// 127.0.0.1, meeting through the TCP store: sums and gathers are exact and
// equal on every rank, a rank that never comes is a timeout, and the store
// survives a client that speaks garbage.
#include "worker/gloo_communicator.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/tcp_store.h"

namespace strata::worker {
namespace {

using std::chrono::milliseconds;

// Runs fn(rank, comm) on `size` threads joined through a fresh store.
template <typename Fn>
void RunRanks(int size, Fn fn) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      auto store = TcpStoreClient::Connect("127.0.0.1", (*server)->port(), milliseconds(10000));
      ASSERT_TRUE(store.ok()) << store.status();
      auto comm = GlooCommunicator::Create(store->get(), "test", "127.0.0.1", r, size, milliseconds(10000));
      ASSERT_TRUE(comm.ok()) << comm.status();
      fn(r, comm->get());
    });
  }
  for (auto& t : threads) t.join();
}

TEST(GlooCommunicatorTest, AllReduceAndAllGather) {
  for (int size : {1, 2, 3}) {
    std::vector<std::vector<float>> reduced(size), gathered(size);
    RunRanks(size, [&](int r, Communicator* comm) {
      EXPECT_EQ(comm->rank(), r);
      EXPECT_EQ(comm->size(), size);
      for (int64_t n : {1, 7, 1000, 70001}) {
        std::vector<float> x(n);
        for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>((i % 13) + r * 100) * 0.5f;
        ASSERT_TRUE(comm->AllReduceSum(x.data(), n).ok());
        for (int64_t i = 0; i < n; i += 997) {
          float want = 0;
          for (int q = 0; q < size; ++q) want += static_cast<float>((i % 13) + q * 100) * 0.5f;
          ASSERT_EQ(x[i], want) << "n " << n << " i " << i;
        }
        std::vector<float> in(n, static_cast<float>(r + 1)), out(n * size, -1.0f);
        ASSERT_TRUE(comm->AllGather(in.data(), n, out.data()).ok());
        for (int q = 0; q < size; ++q) ASSERT_EQ(out[q * n + n - 1], static_cast<float>(q + 1));
        if (n == 70001) {
          reduced[r] = x;
          gathered[r] = out;
        }
      }
    });
    for (int r = 1; r < size; ++r) {
      EXPECT_EQ(reduced[r], reduced[0]);  // bitwise the same on every rank
      EXPECT_EQ(gathered[r], gathered[0]);
    }
  }
}

TEST(GlooCommunicatorTest, MissingRankTimesOut) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  auto store = TcpStoreClient::Connect("127.0.0.1", (*server)->port(), milliseconds(500));
  ASSERT_TRUE(store.ok());
  auto comm = GlooCommunicator::Create(store->get(), "lonely", "127.0.0.1", 0, 2, milliseconds(500));
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kUnavailable) << comm.status();
}

TEST(GlooCommunicatorTest, SingleRankCommunicator) {
  SingleRankCommunicator comm;
  std::vector<float> x = {1, 2, 3}, y(3);
  ASSERT_TRUE(comm.AllReduceSum(x.data(), 3).ok());
  EXPECT_EQ(x, (std::vector<float>{1, 2, 3}));
  ASSERT_TRUE(comm.AllGather(x.data(), 3, y.data()).ok());
  EXPECT_EQ(y, x);
}

TEST(TcpStoreTest, SetGetTimeoutAndGarbage) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  // A client that sends an oversized key length is dropped; the server keeps
  // serving others.
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>((*server)->port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    const char junk[] = {'S', '\xff', '\xff', '\xff', '\x7f'};
    ASSERT_EQ(::send(fd, junk, sizeof(junk), 0), static_cast<ssize_t>(sizeof(junk)));
    char c;
    EXPECT_LE(::recv(fd, &c, 1, 0), 0);  // closed by the server
    ::close(fd);
  }
  auto client = TcpStoreClient::Connect("127.0.0.1", (*server)->port(), milliseconds(1000));
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Set("k", "value").ok());
  auto v = (*client)->Get("k", milliseconds(100));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "value");
  auto missing = (*client)->Get("nope", milliseconds(50));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(TcpStoreClient::Connect("127.0.0.1", 1, milliseconds(50)).ok());
}

}  // namespace
}  // namespace strata::worker
