#include "base/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

namespace strata::base {
namespace {

// Binds a loopback TCP socket to `port` (0: the kernel's choice) and
// returns the port it got, or -1.
int TryBind(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof(a);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  return ok ? ntohs(a.sin_port) : -1;
}

}  // namespace

bool PortInUse(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool in_use = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 && errno == EADDRINUSE;
  ::close(fd);
  return in_use;
}

int PickFreePort() {
  // Below Linux's ephemeral range (32768-60999 by default): the kernel
  // never hands these out for outgoing connections or bind(0), so a port
  // picked here is not taken by some other process's client socket before
  // our child binds it (seen with the kernel's own choice when tests ran
  // side by side). A random start per process spreads concurrent pickers.
  constexpr int kFirst = 20000, kCount = 12000;
  static std::atomic<int> next{static_cast<int>(std::random_device()() % kCount)};
  for (int attempt = 0; attempt < 64; ++attempt) {
    const int port = kFirst + (next.fetch_add(1 + static_cast<int>(std::random_device()() % 97)) % kCount);
    if (TryBind(port) == port) return port;
  }
  const int port = TryBind(0);
  if (port < 0) {
    std::fprintf(stderr, "PickFreePort: cannot bind a loopback socket: %s\n", std::strerror(errno));
    std::abort();
  }
  return port;
}

}  // namespace strata::base
