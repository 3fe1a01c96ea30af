#include "worker/tcp_store.h"

#include <algorithm>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <gloo/common/error.h>

#include "absl/strings/str_cat.h"
#include "openssl/err.h"
#include "openssl/ssl.h"
#include "transport/address.h"

namespace strata::worker {
namespace {

constexpr uint32_t kMaxKey = 4096;
constexpr uint32_t kMaxValue = 16u << 20;
constexpr size_t kMaxClients = 256;
constexpr size_t kMaxStoredBytes = 64u << 20;

constexpr int kHandshakeSeconds = 10;

}  // namespace

// One connection of the store: a socket, and its TLS session when the
// store is authenticated.
struct StoreConn {
  int fd = -1;
  SSL* ssl = nullptr;
  ~StoreConn() {
    if (ssl != nullptr) SSL_free(ssl);
  }
};

namespace {

bool WriteAll(StoreConn& c, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = c.ssl != nullptr ? SSL_write(c.ssl, p, static_cast<int>(std::min<size_t>(n, 1 << 30)))
                                       : ::send(c.fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR && c.ssl == nullptr) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadAll(StoreConn& c, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = c.ssl != nullptr ? SSL_read(c.ssl, p, static_cast<int>(std::min<size_t>(n, 1 << 30)))
                                       : ::recv(c.fd, p, n, 0);
    if (r < 0 && errno == EINTR && c.ssl == nullptr) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

void SetTimeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{static_cast<time_t>(t.count() / 1000), static_cast<suseconds_t>(t.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

std::string SslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "the connection closed during the handshake";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

bool WriteBlob(StoreConn& fd, const char* data, uint32_t n) {
  return WriteAll(fd, &n, sizeof(n)) && (n == 0 || WriteAll(fd, data, n));
}

// Grows the buffer as the bytes arrive, so a peer that announces a large
// value and sends nothing costs no memory (the store's port is reachable
// by anyone on the network).
bool ReadBlob(StoreConn& fd, uint32_t max, std::vector<char>* out) {
  uint32_t n = 0;
  if (!ReadAll(fd, &n, sizeof(n)) || n > max) return false;
  constexpr uint32_t kChunk = 64 << 10;
  out->clear();
  while (out->size() < n) {
    const size_t at = out->size();
    out->resize(at + std::min<size_t>(kChunk, n - at));
    if (!ReadAll(fd, out->data() + at, out->size() - at)) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(const std::string& host, int port,
                                                                     const base::TlsMaterial* tls) {
  SSL_CTX* ctx = nullptr;
  if (tls != nullptr) {
    ctx = base::NewMutualTlsContext(*tls, /*server=*/true);
    if (ctx == nullptr) return absl::InvalidArgumentError("the TP store cannot use this worker's certificate");
  }
  auto addr = transport::Resolve({host, port});
  if (!addr.ok()) return addr.status();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0 || ::listen(fd, 64) != 0) {
    const std::string err = std::strerror(errno);
    ::close(fd);
    if (ctx != nullptr) SSL_CTX_free(ctx);
    return absl::UnavailableError(absl::StrCat("TP store cannot listen on ", host, ":", port, ": ", err));
  }
  sockaddr_in bound;
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  return std::unique_ptr<TcpStoreServer>(new TcpStoreServer(fd, ntohs(bound.sin_port), ctx));
}

TcpStoreServer::TcpStoreServer(int fd, int port, SSL_CTX* tls) : listen_fd_(fd), port_(port), tls_(tls) {
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

TcpStoreServer::~TcpStoreServer() {
  stop_ = true;
  accept_thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : clients_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : threads_) t.join();
  for (int fd : clients_) ::close(fd);
  ::close(listen_fd_);
  if (tls_ != nullptr) SSL_CTX_free(tls_);
}

void TcpStoreServer::AcceptLoop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lock(mu_);
    if (clients_.size() >= kMaxClients) {  // a TP group has at most 64 ranks
      ::close(fd);
      continue;
    }
    clients_.push_back(fd);
    threads_.emplace_back([this, fd] { Serve(fd); });
  }
}

void TcpStoreServer::Serve(int fd) {
  StoreConn conn;
  conn.fd = fd;
  if (tls_ != nullptr) {
    // Mutual TLS: a client without a certificate of the CA never gets to
    // send an op. The handshake is bounded, then reads wait for the rank.
    SetTimeouts(fd, std::chrono::seconds(kHandshakeSeconds));
    conn.ssl = SSL_new(tls_);
    SSL_set_fd(conn.ssl, fd);
    if (SSL_accept(conn.ssl) != 1) {
      refused_++;
      ERR_clear_error();
      ::shutdown(fd, SHUT_RDWR);
      return;
    }
    SetTimeouts(fd, std::chrono::milliseconds(0));
  }
  while (!stop_) {
    char op = 0;
    std::vector<char> key, value;
    if (!ReadAll(conn, &op, 1) || !ReadBlob(conn, kMaxKey, &key) || !ReadBlob(conn, kMaxValue, &value)) break;
    const std::string k(key.begin(), key.end());
    if (op == 'S') {
      std::lock_guard<std::mutex> lock(mu_);
      stored_bytes_ += k.size() + value.size();
      if (stored_bytes_ > kMaxStoredBytes) break;  // more than a rendezvous needs: drop the peer
      data_[k] = std::move(value);
      const char ok = 1;
      if (!WriteAll(conn, &ok, 1) || !WriteBlob(conn, nullptr, 0)) break;
    } else if (op == 'G') {
      std::vector<char> found_value;
      char found = 0;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = data_.find(k);
        if (it != data_.end()) {
          found = 1;
          found_value = it->second;
        }
      }
      if (!WriteAll(conn, &found, 1) ||
          !WriteBlob(conn, found_value.data(), static_cast<uint32_t>(found_value.size()))) {
        break;
      }
    } else {
      break;  // unknown op: drop the peer
    }
  }
  if (conn.ssl != nullptr) SSL_shutdown(conn.ssl);
  ::shutdown(fd, SHUT_RDWR);
}

absl::StatusOr<std::unique_ptr<TcpStoreClient>> TcpStoreClient::Connect(const std::string& host, int port,
                                                                       std::chrono::milliseconds timeout,
                                                                       const base::TlsMaterial* tls) {
  auto addr = transport::Resolve({host, port});
  if (!addr.ok()) return addr.status();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last_error;
  while (true) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) == 0) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      // A dead server must not block a rank forever.
      SetTimeouts(fd, timeout);
      auto conn = std::make_unique<StoreConn>();
      conn->fd = fd;
      if (tls != nullptr) {
        SSL_CTX* ctx = base::NewMutualTlsContext(*tls, /*server=*/false);
        if (ctx == nullptr) {
          ::close(fd);
          return absl::InvalidArgumentError("the TP store client cannot use this worker's certificate");
        }
        conn->ssl = SSL_new(ctx);
        SSL_CTX_free(ctx);  // the session holds a reference
        SSL_set_fd(conn->ssl, fd);
        if (SSL_connect(conn->ssl) != 1) {
          const std::string why = SslError();
          conn.reset();
          ::close(fd);
          return absl::UnauthenticatedError(
              absl::StrCat("TP store ", host, ":", port, ": mutual TLS failed (", why, ")"));
        }
      }
      return std::unique_ptr<TcpStoreClient>(new TcpStoreClient(std::move(conn), timeout));
    }
    last_error = std::strerror(errno);
    ::close(fd);
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("TP store ", host, ":", port, " did not answer within ",
                                                      timeout.count(), " ms (", last_error, ")"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

TcpStoreClient::TcpStoreClient(std::unique_ptr<StoreConn> conn, std::chrono::milliseconds timeout)
    : conn_(std::move(conn)), timeout_(timeout) {}

TcpStoreClient::~TcpStoreClient() {
  const int fd = conn_->fd;
  conn_.reset();
  ::close(fd);
}

absl::Status TcpStoreClient::Request(char op, const std::string& key, const std::vector<char>& value,
                                     bool* found, std::vector<char>* out) {
  if (key.size() > kMaxKey || value.size() > kMaxValue) {
    return absl::InvalidArgumentError(absl::StrCat("TP store key or value too large (", key.size(), ", ",
                                                   value.size(), " bytes)"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  char f = 0;
  std::vector<char> reply;
  StoreConn& c = *conn_;
  if (!WriteAll(c, &op, 1) || !WriteBlob(c, key.data(), static_cast<uint32_t>(key.size())) ||
      !WriteBlob(c, value.data(), static_cast<uint32_t>(value.size())) || !ReadAll(c, &f, 1) ||
      !ReadBlob(c, kMaxValue, &reply)) {
    return absl::UnavailableError("TP store connection lost");
  }
  if (found != nullptr) *found = f != 0;
  if (out != nullptr) *out = std::move(reply);
  return absl::OkStatus();
}

absl::Status TcpStoreClient::Set(const std::string& key, const std::string& value) {
  return Request('S', key, std::vector<char>(value.begin(), value.end()), nullptr, nullptr);
}

absl::StatusOr<std::string> TcpStoreClient::Get(const std::string& key, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    bool found = false;
    std::vector<char> value;
    if (auto s = Request('G', key, {}, &found, &value); !s.ok()) return s;
    if (found) return std::string(value.begin(), value.end());
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("TP store key \"", key, "\" was not set within ", timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void TcpStoreClient::set(const std::string& key, const std::vector<char>& data) {
  if (auto s = Request('S', key, data, nullptr, nullptr); !s.ok()) throw gloo::IoException(s.ToString());
}

std::vector<char> TcpStoreClient::get(const std::string& key) {
  auto v = Get(key, timeout_);
  if (!v.ok()) throw gloo::IoException(v.status().ToString());
  return std::vector<char>(v->begin(), v->end());
}

void TcpStoreClient::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) {
  for (const std::string& k : keys) {
    auto v = Get(k, timeout);
    if (!v.ok()) throw gloo::IoException(v.status().ToString());
  }
}

}  // namespace strata::worker
