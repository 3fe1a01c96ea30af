// The /metrics endpoint under slow and idle clients: connections that send
// a byte every 1.5 s (slowloris) or nothing at all are cut off by the read
// and keep-alive timeouts, so scrapes beside them are answered at once.
#include "transport/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <httplib.h>
#include <iostream>
#include <thread>
#include <vector>

#include <prometheus/counter.h>

#include "gtest/gtest.h"

namespace strata::transport {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int ConnectTo(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST(MetricsHttpTest, SlowAndIdleClientsDoNotHoldUpScrapes) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("strata_test_total").Help("a counter").Register(*registry).Add({}).Increment();
  MetricsHttpServer server(registry);
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());

  // More slow and idle clients than the old pool had threads (two).
  constexpr int kSlow = 6, kIdle = 6;
  std::atomic<bool> stop{false};
  std::vector<std::thread> slow;
  for (int i = 0; i < kSlow; ++i) {
    slow.emplace_back([&] {
      const int fd = ConnectTo(server.port());
      if (fd < 0) return;
      const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
      for (size_t k = 0; k < request.size() && !stop; ++k) {
        if (send(fd, &request[k], 1, MSG_NOSIGNAL) != 1) break;
        for (int t = 0; t < 15 && !stop; ++t) std::this_thread::sleep_for(milliseconds(100));  // 1.5 s a byte
      }
      close(fd);
    });
  }
  std::vector<int> idle;
  for (int i = 0; i < kIdle; ++i) idle.push_back(ConnectTo(server.port()));
  std::this_thread::sleep_for(milliseconds(200));  // every one of them accepted first

  int answered = 0;
  double slowest = 0;
  for (int scrape = 0; scrape < 4; ++scrape) {
    httplib::Client client("127.0.0.1", server.port());
    client.set_connection_timeout(std::chrono::seconds(2));
    client.set_read_timeout(std::chrono::seconds(2));
    const auto start = Clock::now();
    auto res = client.Get("/metrics");
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    slowest = std::max(slowest, seconds);
    if (res && res->status == 200 && res->body.find("strata_test_total 1") != std::string::npos && seconds < 1.5) {
      answered++;
    } else {
      ADD_FAILURE() << "scrape " << scrape << ": " << (res ? res->status : -1) << " after " << seconds << " s";
    }
    std::this_thread::sleep_for(milliseconds(800));
  }
  EXPECT_EQ(answered, 4);
  std::cerr << answered << " of 4 scrapes answered, the slowest in " << slowest << " s\n";
  stop = true;
  for (auto& t : slow) t.join();
  for (int fd : idle) {
    if (fd >= 0) close(fd);
  }
}

}  // namespace
}  // namespace strata::transport
