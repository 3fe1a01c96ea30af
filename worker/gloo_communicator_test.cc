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

// Runs fn(rank, comm) on `size` threads joined through a fresh store, with
// the collectives in shared memory or over TCP.
template <typename Fn>
void RunRanks(int size, Fn fn, bool shared_memory) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      auto store = TcpStoreClient::Connect("127.0.0.1", (*server)->port(), milliseconds(10000));
      ASSERT_TRUE(store.ok()) << store.status();
      auto comm =
          GlooCommunicator::Create(store->get(), "test", "127.0.0.1", r, size, milliseconds(10000), shared_memory);
      ASSERT_TRUE(comm.ok()) << comm.status();
      EXPECT_EQ((*comm)->uses_shared_memory(), shared_memory && size > 1);
      fn(r, comm->get());
    });
  }
  for (auto& t : threads) t.join();
}

class GlooPathTest : public ::testing::TestWithParam<bool> {};  // shared memory?

TEST_P(GlooPathTest, AllReduceAndAllGather) {
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
    }, GetParam());
    for (int r = 1; r < size; ++r) {
      EXPECT_EQ(reduced[r], reduced[0]);  // bitwise the same on every rank
      EXPECT_EQ(gathered[r], gathered[0]);
    }
  }
}

// Real data over both all-reduce paths (the direct exchange at decode sizes,
// Gloo's ring above GlooCommunicator::kDirectMaxBytes), with all-gathers
// between (the largest in several inbox windows, each in several pieces):
// every rank ends bitwise equal, and two ranks' sums are the float sum of
// the two inputs.
TEST_P(GlooPathTest, RealDataOnBothPathsIsBitwiseEqualOnEveryRank) {
  const int64_t ring_n = GlooCommunicator::kDirectMaxBytes / 4 + 3;
  for (int size : {2, 3}) {
    const int64_t direct_max = GlooCommunicator::kDirectMaxBytes / 4 / (size - 1);
    const int64_t windows = GlooCommunicator::kInboxBytes / 4 / (size - 1) * 2 + 5;
    ASSERT_GE(GlooCommunicator::kInboxBytes / (size - 1), static_cast<int64_t>(2 * GlooCommunicator::SyncPieceBytes()));
    const std::vector<int64_t> sizes = {5000, 1, 70001, 3, ring_n, 10, 2048 * 16, direct_max, direct_max - 1, windows};
    std::vector<std::vector<std::vector<float>>> out(size);
    auto input = [](int r, int64_t n, int64_t i) {
      uint32_t h = static_cast<uint32_t>(i * 2654435761u) ^ static_cast<uint32_t>(r * 40503 + n);
      h ^= h >> 13;
      h *= 0x5bd1e995u;
      h ^= h >> 15;
      return (static_cast<float>(h % 20001) - 10000.0f) * 1.37e-3f;
    };
    RunRanks(size, [&](int r, Communicator* comm) {
      for (int64_t n : sizes) {
        std::vector<float> x(n);
        for (int64_t i = 0; i < n; ++i) x[i] = input(r, n, i);
        ASSERT_TRUE(comm->AllReduceSum(x.data(), n).ok()) << n;
        out[r].push_back(x);
        std::vector<float> g(n * size);
        ASSERT_TRUE(comm->AllGather(x.data(), n, g.data()).ok());
        ASSERT_EQ(std::vector<float>(g.begin(), g.begin() + n), x);
      }
    }, GetParam());
    for (size_t k = 0; k < sizes.size(); ++k) {
      for (int r = 1; r < size; ++r) ASSERT_EQ(out[r][k], out[0][k]) << "size " << size << " n " << sizes[k];
      for (int64_t i = 0; i < sizes[k]; ++i) {
        float want = 0;
        for (int q = 0; q < size; ++q) want += input(q, sizes[k], i);
        if (size == 2) {
          ASSERT_EQ(out[0][k][i], want) << sizes[k] << " " << i;
        } else {
          ASSERT_NEAR(out[0][k][i], want, 1e-5f * 30) << sizes[k] << " " << i;
        }
      }
    }
  }
}

// A peer that leaves mid-way fails the all-reduce with UNAVAILABLE (not a
// hang), and every later collective fails at once.
TEST_P(GlooPathTest, APeerThatLeavesFailsTheAllReduce) {
  RunRanks(2, [&](int r, Communicator* comm) {
    std::vector<float> x(4096, 1.0f);
    ASSERT_TRUE(comm->AllReduceSum(x.data(), 4096).ok());
    if (r == 1) return;  // its communicator, and every connection, closes
    absl::Status s = absl::OkStatus();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 100 && s.ok(); ++i) s = comm->AllReduceSum(x.data(), 4096);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(9));
    EXPECT_EQ(comm->AllReduceSum(x.data(), 4096).code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(comm->AllGather(x.data(), 1, x.data() + 1).code(), absl::StatusCode::kUnavailable);
  }, GetParam());
}

INSTANTIATE_TEST_SUITE_P(SharedMemoryAndTcp, GlooPathTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "Shm" : "Tcp"; });

TEST(GlooCommunicatorTest, SyncPiecesFitHalfTheSendBufferCap) {
  const size_t piece = GlooCommunicator::SyncPieceBytes();
  EXPECT_GE(piece, size_t{64} << 10);
  EXPECT_LE(piece, size_t{1} << 20);
  EXPECT_EQ(piece % 4096, 0u);
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
