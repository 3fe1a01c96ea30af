#include "transport/ucx_transport.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <poll.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "openssl/err.h"
#include "openssl/ssl.h"
#include "transport/buffer_pool.h"

namespace strata::transport {
namespace {

constexpr unsigned kAmId = 7;

using Clock = std::chrono::steady_clock;

// Completion of one posted operation, shared by the caller and UCX's
// callback (either may finish last).
struct Completion {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  ucs_status_t status = UCS_OK;
  Clock::time_point finished_at;
  std::vector<ucp_dt_iov_t> iov;
  WireHeader header;
  std::string raw_header, raw_data;  // SendRawForTest only

  void Finish(ucs_status_t s) {
    std::lock_guard<std::mutex> lock(mu);
    status = s;
    done = true;
    finished_at = Clock::now();
    cv.notify_all();
  }
  bool Wait(Clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_until(lock, deadline, [&] { return done; });
  }
};

// Reads what the peer sends until it closes, over `ssl` when set; at most
// 1 MiB.
std::string ReadToEnd(int fd, SSL* ssl) {
  std::string data;
  char buf[4096];
  while (data.size() <= (1u << 20)) {
    const ssize_t r = ssl != nullptr ? SSL_read(ssl, buf, sizeof(buf)) : ::recv(fd, buf, sizeof(buf), 0);
    if (r <= 0) break;
    data.append(buf, static_cast<size_t>(r));
  }
  return data;
}

// Reads a peer's UCX worker address from its address socket (over mutual
// TLS with `tls`: UNAUTHENTICATED when the handshake fails).
absl::StatusOr<std::string> FetchAddress(const sockaddr_in& addr, std::chrono::milliseconds timeout, SSL_CTX* tls) {
  const auto deadline = Clock::now() + timeout;
  std::string last_error = "timed out";
  while (Clock::now() < deadline) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      last_error = std::strerror(errno);
      ::close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    SSL* ssl = nullptr;
    if (tls != nullptr) {
      ssl = SSL_new(tls);
      SSL_set_fd(ssl, fd);
      if (SSL_connect(ssl) != 1) {
        const unsigned long e = ERR_get_error();
        ERR_clear_error();
        char why[256] = "the peer closed the connection during the handshake";
        if (e != 0) ERR_error_string_n(e, why, sizeof(why));
        SSL_free(ssl);
        ::close(fd);
        return absl::UnauthenticatedError(absl::StrCat("mutual TLS with the peer's address socket failed (", why, ")"));
      }
    }
    const std::string data = ReadToEnd(fd, ssl);
    if (ssl != nullptr) SSL_free(ssl);
    ::close(fd);
    uint32_t n = 0;
    if (data.size() >= sizeof(n)) std::memcpy(&n, data.data(), sizeof(n));
    if (data.size() < sizeof(n) || n == 0 || data.size() != sizeof(n) + n) {
      return absl::UnavailableError("the peer's address socket did not send a UCX worker address");
    }
    return data.substr(sizeof(n));
  }
  return absl::UnavailableError(last_error);
}

}  // namespace

struct UcxTransport::Impl {
  struct Peer {
    HostPort address;
    ucp_ep_h ep = nullptr;
    std::atomic<bool> failed{false};
    std::string error;  // set by the progress thread before `failed`
  };
  struct PendingRecv {
    Impl* self;
    Message message;
  };

  UcxOptions options;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  int efd = -1;
  int port = 0;
  std::thread thread;
  std::atomic<bool> stop{false};
  // The worker's UCX address (every transport it can be reached by), served
  // to connecting peers over a plain TCP socket at host:port.
  std::string worker_address;
  int address_fd = -1;
  SSL_CTX* tls_server = nullptr;  // owned; null: the address goes to anyone
  SSL_CTX* tls_client = nullptr;  // owned; null: fetched in plaintext
  std::atomic<uint64_t> address_refused{0};
  std::thread address_thread;

  std::mutex cmd_mu;
  std::deque<std::function<void()>> commands;
  std::atomic<bool> has_commands{false};  // commands is not empty (set under cmd_mu)

  // Who drives the UCX worker (runs the commands, progresses it, sleeps on
  // its event fd): the progress thread, or else a thread waiting in
  // Receive or for a send, which then sleeps on the event fd itself, so
  // what it waits for wakes the thread that waits (one wake-up, not two);
  // the progress thread waits meanwhile. Sends start on the caller's thread.
  // worker_mu serializes every call into UCX (UCS_THREAD_MODE_SERIALIZED)
  // and is never held while sleeping.
  std::mutex worker_mu;
  std::mutex park_mu;
  std::condition_variable park_cv;
  bool caller_driving = false;               // under park_mu
  std::atomic<bool> driving{false};          // caller_driving, for Receive's waiters (set under park_mu)
  std::atomic<bool> progress_sleeping{false};  // the progress thread is in poll
  // How often the parked progress thread looks whether callers still drive.
  static constexpr auto kParkCheckMin = std::chrono::milliseconds(1);
  static constexpr auto kParkCheckMax = std::chrono::milliseconds(64);
  std::chrono::milliseconds park_check = kParkCheckMin;  // under park_mu
  bool wanted = false;  // work for the progress thread, even while callers drive (under park_mu)

  std::mutex rx_mu;
  std::condition_variable rx_cv;
  std::deque<Message> rx;
  int interrupts = 0;  // pending Interrupt calls (under rx_mu)

  std::mutex peers_mu;
  std::vector<std::unique_ptr<Peer>> peers;
  std::map<std::string, int> by_address;

  std::atomic<uint64_t> sent{0}, sent_bytes{0}, received{0}, received_bytes{0}, rejected{0}, unauthenticated{0};
  MessageGuard guard;
  std::atomic<uint64_t> send_nanos{0};
  // Buffers of delivered messages handed back (Recycle) for later receives.
  BufferPool buffers{16, size_t{256} << 20};

  ~Impl() { Shutdown(); }

  void Post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(cmd_mu);
      commands.push_back(std::move(fn));
      has_commands = true;
    }
    WakeDriver();
  }

  // Work is waiting for whoever drives: wakes the progress thread if it is
  // parked, and whichever thread sleeps on the event fd.
  void WakeDriver() {
    {
      std::lock_guard<std::mutex> lock(park_mu);
      wanted = true;
    }
    park_cv.notify_one();
    ucp_worker_signal(worker);
  }

  // One turn of driving: the posted commands, then progress until UCX has
  // nothing more to do. True when anything happened.
  bool Turn() {
    std::lock_guard<std::mutex> lock(worker_mu);  // first: commands run in the order they were posted
    bool worked = false;
    if (has_commands) {  // a spinning driver makes no deque (two allocations) per turn
      std::deque<std::function<void()>> todo;
      {
        std::lock_guard<std::mutex> commands_lock(cmd_mu);
        todo.swap(commands);
        has_commands = false;
      }
      for (auto& fn : todo) fn();
      worked = !todo.empty();
    }
    while (ucp_worker_progress(worker) != 0) worked = true;
    return worked;
  }

  // Arms the event fd and sleeps on it for at most `timeout_ms`; returns at
  // once when UCX has events pending (or a command was posted: Post
  // signals the worker, and arming sees the signal).
  void Sleep(int timeout_ms, std::atomic<bool>* sleeping) {
    {
      std::lock_guard<std::mutex> lock(worker_mu);
      if (ucp_worker_arm(worker) == UCS_ERR_BUSY) return;
    }
    if (sleeping != nullptr) sleeping->store(true);
    pollfd pfd{efd, POLLIN, 0};
    ::poll(&pfd, 1, timeout_ms);
    if (sleeping != nullptr) sleeping->store(false);
  }

  void Deliver(Message m) {
    if (!guard.Admit(m.header, m.data.data(), m.data.size())) {
      rejected += 1;
      if (unauthenticated++ % 1000 == 0) {
        std::cerr << "strata data plane: dropped a message that does not authenticate (key id "
                  << m.header.key_id << "; " << unauthenticated.load() << " so far)\n";
      }
      return;
    }
    received += 1;
    received_bytes += m.data.size();
    m.received = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(rx_mu);
    rx.push_back(std::move(m));
    rx_cv.notify_one();
  }

  static void OnRecvData(void* request, ucs_status_t status, size_t, void* user_data) {
    auto* p = static_cast<PendingRecv*>(user_data);
    if (status == UCS_OK) {
      p->self->Deliver(std::move(p->message));
    } else {
      p->self->rejected += 1;
    }
    delete p;
    if (request != nullptr) ucp_request_free(request);
  }

  static ucs_status_t OnAm(void* arg, const void* header, size_t header_length, void* data, size_t length,
                           const ucp_am_recv_param_t* param) {
    auto* self = static_cast<Impl*>(arg);
    absl::Status valid = ValidateHeader(header, header_length, length);
    if (!valid.ok()) {
      self->rejected += 1;
      std::cerr << "strata data plane: rejected a message: " << valid.message() << "\n";
      return UCS_OK;  // dropped; a rendezvous sender is released by UCX
    }
    Message m;
    std::memcpy(&m.header, header, sizeof(WireHeader));
    m.data = self->buffers.Take(length);  // uninitialized: UCX or the copy below writes every byte
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      auto* pending = new PendingRecv{self, std::move(m)};
      ucp_request_param_t p;
      std::memset(&p, 0, sizeof(p));
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.recv_am = &OnRecvData;
      p.user_data = pending;
      void* buffer = pending->message.data.data();
      ucs_status_ptr_t req = ucp_am_recv_data_nbx(self->worker, data, buffer, length, &p);
      if (req == nullptr) {
        OnRecvData(nullptr, UCS_OK, length, pending);
      } else if (UCS_PTR_IS_ERR(req)) {
        OnRecvData(nullptr, UCS_PTR_STATUS(req), 0, pending);
      }
      return UCS_OK;
    }
    if (length > 0) std::memcpy(m.data.data(), data, length);
    self->Deliver(std::move(m));
    return UCS_OK;
  }

  static void OnPeerError(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* peer = static_cast<Peer*>(arg);
    peer->error = ucs_status_string(status);
    peer->failed = true;
  }
  void ServeAddress() {
    while (!stop) {
      pollfd pfd{address_fd, POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;
      const int fd = ::accept4(address_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      const uint32_t n = static_cast<uint32_t>(worker_address.size());
      std::string out(reinterpret_cast<const char*>(&n), sizeof(n));
      out += worker_address;
      timeval tv{1, 0};  // a peer gets a second for the handshake and the address
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      if (tls_server != nullptr) {
        SSL* ssl = SSL_new(tls_server);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
          (void)SSL_write(ssl, out.data(), static_cast<int>(out.size()));
          SSL_shutdown(ssl);
        } else {
          address_refused += 1;  // no certificate of the CA: no address
          ERR_clear_error();
        }
        SSL_free(ssl);
      } else {
        (void)::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
      }
      ::close(fd);
    }
  }

  // Drives the worker on the calling thread until `done()` or `deadline`,
  // unless another caller drives already (then false, at once). The
  // progress thread waits meanwhile, so what this caller waits for (a
  // message, a send's completion) wakes this very thread.
  bool DriveUntil(Clock::time_point deadline, const std::function<bool()>& done) {
    {
      std::lock_guard<std::mutex> lock(park_mu);
      if (caller_driving) return false;
      caller_driving = true;
      driving = true;
    }
    if (progress_sleeping) ucp_worker_signal(worker);  // it leaves its sleep and waits
    auto last_active = Clock::now();
    while (!done()) {
      const auto now = Clock::now();
      if (now >= deadline) break;
      if (Turn()) {
        last_active = now;
        continue;
      }
      if (now - last_active < options.spin) continue;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
      Sleep(static_cast<int>(std::clamp<int64_t>(left + 1, 1, 100)), nullptr);
    }
    {
      std::lock_guard<std::mutex> lock(park_mu);
      caller_driving = false;
      driving = false;
    }
    // The progress thread is not woken: it looks again within park_check.
    // A wake-up per message made it runnable after every hop, and on a
    // machine with as many cores as spinning callers it took the core of
    // one (docs/benchmarks.md).
    {
      std::lock_guard<std::mutex> lock(rx_mu);  // a receiver waiting in Receive may drive now
      rx_cv.notify_all();
    }
    return true;
  }

  // The progress thread: drives the worker while no caller does (so a
  // rendezvous transfer goes on while this process computes).
  void Loop() {
    auto last_active = Clock::now();
    while (!stop) {
      {
        std::unique_lock<std::mutex> lock(park_mu);
        if (caller_driving) {
          // Unwoken (see DriveUntil), it looks again after a while that
          // grows while callers keep driving; work that needs it at once
          // (an asynchronous send, a posted command) wakes it.
          park_cv.wait_for(lock, park_check, [&] { return !caller_driving || stop || wanted; });
          park_check = std::min(park_check * 2, kParkCheckMax);
          if (wanted || !caller_driving) park_check = kParkCheckMin;
          wanted = false;
          last_active = Clock::now() - options.spin;  // the caller's activity, not ours: no spin
          continue;
        }
      }
      const auto now = Clock::now();
      if (Turn()) {
        last_active = now;
        continue;
      }
      if (now - last_active < options.spin) continue;
      {
        std::lock_guard<std::mutex> lock(park_mu);
        if (caller_driving) continue;  // it sleeps on the event fd instead of us
      }
      Sleep(100, &progress_sleeping);
    }
  }

  void CloseEp(ucp_ep_h ep) {
    ucp_request_param_t p;
    std::memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &p);
    if (req != nullptr && !UCS_PTR_IS_ERR(req)) {
      const auto deadline = Clock::now() + std::chrono::seconds(2);
      while (ucp_request_check_status(req) == UCS_INPROGRESS && Clock::now() < deadline) {
        ucp_worker_progress(worker);
      }
      ucp_request_free(req);
    }
  }

  void Shutdown() {
    if (address_thread.joinable()) {
      stop = true;
      address_thread.join();
    }
    if (address_fd >= 0) ::close(address_fd);
    address_fd = -1;
    if (tls_server != nullptr) SSL_CTX_free(tls_server);
    if (tls_client != nullptr) SSL_CTX_free(tls_client);
    tls_server = tls_client = nullptr;
    if (thread.joinable()) {
      stop = true;
      ucp_worker_signal(worker);
      park_cv.notify_all();
      thread.join();
    }
    if (worker != nullptr) {
      for (auto& peer : peers) {
        if (peer->ep != nullptr) CloseEp(peer->ep);
      }
      peers.clear();
      ucp_worker_destroy(worker);
      worker = nullptr;
    }
    if (context != nullptr) ucp_cleanup(context);
    context = nullptr;
  }

  // With worker_mu held: starts the send and arranges completion.
  void StartSend(ucp_ep_h ep, std::shared_ptr<Completion> c, const void* header, size_t header_len,
                 const void* buffer, size_t count, bool iov) {
    ucp_request_param_t p;
    std::memset(&p, 0, sizeof(p));
    // The header must stay valid until completion (UCX 1.13 has no
    // COPY_HEADER flag): it lives in the Completion.
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    if (iov) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
      p.datatype = ucp_dt_make_iov();
    }
    p.cb.send = [](void* request, ucs_status_t status, void* user_data) {
      auto* holder = static_cast<std::shared_ptr<Completion>*>(user_data);
      (*holder)->Finish(status);
      delete holder;
      ucp_request_free(request);
    };
    auto* holder = new std::shared_ptr<Completion>(c);
    p.user_data = holder;
    ucs_status_ptr_t req = ucp_am_send_nbx(ep, kAmId, header, header_len, buffer, count, &p);
    if (req == nullptr) {
      c->Finish(UCS_OK);
      delete holder;
    } else if (UCS_PTR_IS_ERR(req)) {
      c->Finish(UCS_PTR_STATUS(req));
      delete holder;
    }
  }

  absl::Status WaitSend(int peer_id, Peer* peer, const std::shared_ptr<Completion>& c,
                        std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    auto done = [&c] {
      std::lock_guard<std::mutex> lock(c->mu);
      return c->done;
    };
    if (!DriveUntil(deadline, done)) c->Wait(deadline);
    if (!done()) {
      // A stuck peer: close the endpoint, which fails the request, so the
      // caller's buffers are released before we return.
      Post([this, peer] {
        if (peer->ep != nullptr) {
          CloseEp(peer->ep);
          peer->ep = nullptr;
        }
        peer->error = "send timed out";
        peer->failed = true;
      });
      c->Wait(Clock::now() + std::chrono::seconds(10));
      return absl::DeadlineExceededError(absl::StrCat("send to ", peer->address.ToString(), " (peer ", peer_id,
                                                      ") did not complete within ", timeout.count(), " ms"));
    }
    if (c->status != UCS_OK) {
      return absl::UnavailableError(absl::StrCat("send to ", peer->address.ToString(),
                                                 " failed: ", ucs_status_string(c->status)));
    }
    return absl::OkStatus();
  }

  Peer* GetPeer(int id) {
    std::lock_guard<std::mutex> lock(peers_mu);
    if (id < 0 || id >= static_cast<int>(peers.size())) return nullptr;
    return peers[id].get();
  }
};

UcxTransport::UcxTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
UcxTransport::~UcxTransport() = default;

absl::StatusOr<std::unique_ptr<UcxTransport>> UcxTransport::Create(const UcxOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  auto addr = Resolve(options.listen);
  if (!addr.ok()) return addr.status();

  ucp_config_t* config = nullptr;
  if (ucp_config_read(nullptr, nullptr, &config) != UCS_OK) {
    return absl::InternalError("UCX: cannot read its configuration (UCX_* environment variables)");
  }
  // A process told to listen on loopback keeps UCX's network transports on
  // loopback too (UCX's TCP transport otherwise listens on every
  // interface). Elsewhere UCX_NET_DEVICES names the devices: a device
  // filter by address would also drop the host's RDMA devices.
  if (std::getenv("UCX_NET_DEVICES") == nullptr && (ntohl(addr->sin_addr.s_addr) >> 24) == 127) {
    if (ucp_config_modify(config, "NET_DEVICES", "lo") != UCS_OK) {
      ucp_config_release(config);
      return absl::InternalError("UCX: cannot restrict its network devices to loopback");
    }
  }
  ucp_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  ucs_status_t st = ucp_init(&params, config, &impl->context);
  ucp_config_release(config);
  if (st != UCS_OK) return absl::InternalError(absl::StrCat("ucp_init: ", ucs_status_string(st)));

  ucp_worker_params_t wp;
  std::memset(&wp, 0, sizeof(wp));
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;  // one thread at a time, under Impl::worker_mu (signal is thread-safe)
  st = ucp_worker_create(impl->context, &wp, &impl->worker);
  if (st != UCS_OK) return absl::InternalError(absl::StrCat("ucp_worker_create: ", ucs_status_string(st)));
  st = ucp_worker_get_efd(impl->worker, &impl->efd);
  if (st != UCS_OK) return absl::InternalError(absl::StrCat("ucp_worker_get_efd: ", ucs_status_string(st)));

  ucp_am_handler_param_t hp;
  std::memset(&hp, 0, sizeof(hp));
  hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                  UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
  hp.id = kAmId;
  hp.cb = &Impl::OnAm;
  hp.arg = impl.get();
  hp.flags = UCP_AM_FLAG_WHOLE_MSG;
  st = ucp_worker_set_am_recv_handler(impl->worker, &hp);
  if (st != UCS_OK) return absl::InternalError(absl::StrCat("UCX AM handler: ", ucs_status_string(st)));

  ucp_address_t* address = nullptr;
  size_t address_length = 0;
  st = ucp_worker_get_address(impl->worker, &address, &address_length);
  if (st != UCS_OK) return absl::InternalError(absl::StrCat("ucp_worker_get_address: ", ucs_status_string(st)));
  impl->worker_address.assign(reinterpret_cast<const char*>(address), address_length);
  ucp_worker_release_address(impl->worker, address);

  impl->address_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(impl->address_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (impl->address_fd < 0 ||
      ::bind(impl->address_fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0 ||
      ::listen(impl->address_fd, 64) != 0) {
    return absl::UnavailableError(absl::StrCat("data plane cannot listen on ", options.listen.ToString(), ": ",
                                               std::strerror(errno)));
  }
  sockaddr_in bound;
  socklen_t bound_len = sizeof(bound);
  ::getsockname(impl->address_fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  impl->port = ntohs(bound.sin_port);
  if (options.tls != nullptr) {
    impl->tls_server = base::NewMutualTlsContext(*options.tls, /*server=*/true);
    impl->tls_client = base::NewMutualTlsContext(*options.tls, /*server=*/false);
    if (impl->tls_server == nullptr || impl->tls_client == nullptr) {
      return absl::InvalidArgumentError("the data plane cannot use this process's certificate");
    }
  }
  impl->address_thread = std::thread([raw = impl.get()] { raw->ServeAddress(); });
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<UcxTransport>(new UcxTransport(std::move(impl)));
}

std::string UcxTransport::address() const { return HostPort{impl_->options.listen.host, impl_->port}.ToString(); }

void UcxTransport::Disconnect(int peer_id) {
  Impl::Peer* peer = nullptr;
  {
    std::lock_guard<std::mutex> lock(impl_->peers_mu);
    if (peer_id < 0 || peer_id >= static_cast<int>(impl_->peers.size())) return;
    peer = impl_->peers[peer_id].get();
  }
  peer->failed = true;  // Connect makes a new one from now on
  impl_->Post([impl = impl_.get(), peer] {
    if (peer->ep != nullptr) {
      impl->CloseEp(peer->ep);
      peer->ep = nullptr;
    }
    peer->error = "disconnected";
  });
}

absl::StatusOr<int> UcxTransport::Connect(const HostPort& peer_address) {
  auto addr = Resolve(peer_address);
  if (!addr.ok()) return addr.status();
  const std::string key = peer_address.ToString();
  Impl::Peer* peer = nullptr;
  int id = -1;
  {
    std::lock_guard<std::mutex> lock(impl_->peers_mu);
    auto it = impl_->by_address.find(key);
    if (it != impl_->by_address.end() && !impl_->peers[it->second]->failed) return it->second;
    impl_->peers.push_back(std::make_unique<Impl::Peer>());
    id = static_cast<int>(impl_->peers.size()) - 1;
    peer = impl_->peers.back().get();
    peer->address = peer_address;
    impl_->by_address[key] = id;
  }
  auto remote = FetchAddress(*addr, impl_->options.connect_timeout, impl_->tls_client);
  if (!remote.ok()) {
    peer->error = std::string(remote.status().message());
    peer->failed = true;
    return absl::UnavailableError(absl::StrCat("cannot connect to ", key, ": ", remote.status().message()));
  }
  auto c = std::make_shared<Completion>();
  c->raw_data = std::move(*remote);
  Impl* impl = impl_.get();
  impl_->Post([impl, peer, c] {
    ucp_ep_params_t p;
    std::memset(&p, 0, sizeof(p));
    p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                   UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.address = reinterpret_cast<const ucp_address_t*>(c->raw_data.data());
    p.err_mode = impl->options.peer_failure_detection ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    p.err_handler.cb = &Impl::OnPeerError;
    p.err_handler.arg = peer;
    ucs_status_t st = ucp_ep_create(impl->worker, &p, &peer->ep);
    if (st != UCS_OK) {
      peer->ep = nullptr;
      c->Finish(st);
      return;
    }
    // Flushing completes once the connection is up (or fails).
    ucp_request_param_t fp;
    std::memset(&fp, 0, sizeof(fp));
    fp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    fp.cb.send = [](void* request, ucs_status_t status, void* user_data) {
      auto* holder = static_cast<std::shared_ptr<Completion>*>(user_data);
      (*holder)->Finish(status);
      delete holder;
      ucp_request_free(request);
    };
    auto* holder = new std::shared_ptr<Completion>(c);
    fp.user_data = holder;
    ucs_status_ptr_t req = ucp_ep_flush_nbx(peer->ep, &fp);
    if (req == nullptr || UCS_PTR_IS_ERR(req)) {
      c->Finish(req == nullptr ? UCS_OK : UCS_PTR_STATUS(req));
      delete holder;
    }
  });
  if (!c->Wait(Clock::now() + impl_->options.connect_timeout) || c->status != UCS_OK || peer->failed) {
    const std::string why = !c->done ? "timed out" : (peer->failed ? peer->error : ucs_status_string(c->status));
    impl_->Post([impl, peer] {
      if (peer->ep != nullptr) impl->CloseEp(peer->ep);
      peer->ep = nullptr;
    });
    peer->failed = true;
    c->Wait(Clock::now() + std::chrono::seconds(10));
    return absl::UnavailableError(absl::StrCat("cannot connect to ", key, ": ", why));
  }
  return id;
}

namespace {

struct UcxPendingSend : public PendingSend {
  UcxTransport::Impl* impl = nullptr;
  int peer_id = -1;
  void* peer = nullptr;  // Impl::Peer*
  std::shared_ptr<Completion> completion;
  size_t total = 0;
  Clock::time_point start;
  bool waited = false;
  std::function<void()> wait_unwaited;
  bool Done() const override {
    std::lock_guard<std::mutex> lock(completion->mu);
    return completion->done;
  }
  ~UcxPendingSend() override {
    if (!waited && wait_unwaited) wait_unwaited();
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<PendingSend>> UcxTransport::SendAsync(int peer_id, const WireHeader& header,
                                                                     const std::vector<Bytes>& parts) {
  return Start(peer_id, header, parts, /*caller_waits=*/false);
}

absl::StatusOr<std::unique_ptr<PendingSend>> UcxTransport::Start(int peer_id, const WireHeader& header,
                                                                 const std::vector<Bytes>& parts, bool caller_waits) {
  Impl::Peer* peer = impl_->GetPeer(peer_id);
  if (peer == nullptr) return absl::InvalidArgumentError(absl::StrCat("no peer ", peer_id));
  if (peer->failed) {
    return absl::UnavailableError(absl::StrCat("peer ", peer->address.ToString(), " failed: ", peer->error));
  }
  size_t total = 0;
  auto c = std::make_shared<Completion>();
  c->header = header;
  impl_->guard.Sign(&c->header, parts);
  for (const Bytes& b : parts) {
    if (b.size == 0) continue;
    c->iov.push_back(ucp_dt_iov_t{const_cast<void*>(b.data), b.size});
    total += b.size;
  }
  if (total != header.plan_bytes + header.payload_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("send of ", total, " bytes, but the header announces ",
                                                   header.plan_bytes, " + ", header.payload_bytes));
  }
  auto pending = std::make_unique<UcxPendingSend>();
  pending->impl = impl_.get();
  pending->peer_id = peer_id;
  pending->peer = peer;
  pending->completion = c;
  pending->total = total;
  pending->start = Clock::now();
  Impl* impl = impl_.get();
  pending->wait_unwaited = [impl, peer_id, peer, c] {
    // Destroyed unwaited (its owner went away): give it a moment, then
    // close the endpoint so UCX lets go of the caller's buffers.
    (void)impl->WaitSend(peer_id, peer, c, std::chrono::milliseconds(2000));
  };
  {
    // On the caller's thread: an eager send completes here, with no
    // hand-off to the progress thread.
    std::lock_guard<std::mutex> lock(impl_->worker_mu);
    if (peer->ep == nullptr || peer->failed) {
      c->Finish(UCS_ERR_CONNECTION_RESET);
    } else if (c->iov.empty()) {  // UCX asserts on an empty IOV: send a contiguous empty buffer
      impl->StartSend(peer->ep, c, &c->header, sizeof(WireHeader), nullptr, 0, false);
    } else if (c->iov.size() == 1) {  // contiguous: UCX's fastest protocols
      impl->StartSend(peer->ep, c, &c->header, sizeof(WireHeader), c->iov[0].buffer, c->iov[0].length, false);
    } else {
      impl->StartSend(peer->ep, c, &c->header, sizeof(WireHeader), c->iov.data(), c->iov.size(), true);
    }
  }
  // The driver progresses it from here (an eventfd write and a wake-up,
  // which a caller that drives it itself next does without).
  if (!caller_waits && !pending->Done()) impl_->WakeDriver();
  return std::unique_ptr<PendingSend>(std::move(pending));
}

absl::Status UcxTransport::Wait(PendingSend* send, std::chrono::milliseconds timeout) {
  auto* p = dynamic_cast<UcxPendingSend*>(send);
  if (p == nullptr || p->impl != impl_.get()) return absl::InvalidArgumentError("not a send of this transport");
  if (p->waited) return absl::FailedPreconditionError("this send was already waited for");
  p->waited = true;
  absl::Status s = impl_->WaitSend(p->peer_id, static_cast<Impl::Peer*>(p->peer), p->completion, timeout);
  impl_->send_nanos += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - p->start).count();
  if (s.ok()) {
    impl_->sent += 1;
    impl_->sent_bytes += p->total;
    std::lock_guard<std::mutex> lock(p->completion->mu);
    p->transfer_seconds = std::chrono::duration<double>(p->completion->finished_at - p->start).count();
  }
  return s;
}

absl::Status UcxTransport::Send(int peer_id, const WireHeader& header, const std::vector<Bytes>& parts,
                                std::chrono::milliseconds timeout) {
  auto pending = Start(peer_id, header, parts, /*caller_waits=*/true);
  if (!pending.ok()) return pending.status();
  return Wait(pending->get(), timeout);
}

absl::Status UcxTransport::SendRawForTest(int peer_id, const std::string& header, const std::string& data,
                                          std::chrono::milliseconds timeout) {
  Impl::Peer* peer = impl_->GetPeer(peer_id);
  if (peer == nullptr || peer->failed) return absl::UnavailableError("no such live peer");
  auto c = std::make_shared<Completion>();
  c->raw_header = header;
  c->raw_data = data;
  Impl* impl = impl_.get();
  impl_->Post([impl, peer, c] {
    impl->StartSend(peer->ep, c, c->raw_header.data(), c->raw_header.size(), c->raw_data.data(),
                    c->raw_data.size(), false);
  });
  return impl_->WaitSend(peer_id, peer, c, timeout);
}

std::string UcxTransport::DescribePeer(int peer_id) {
  Impl::Peer* peer = impl_->GetPeer(peer_id);
  if (peer == nullptr) return "no such peer";
  auto c = std::make_shared<Completion>();
  Impl::Peer* p = peer;
  impl_->Post([p, c] {
    char* buf = nullptr;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    if (f != nullptr) {
      if (p->ep != nullptr) ucp_ep_print_info(p->ep, f);
      std::fclose(f);
      c->raw_data.assign(buf, len);
      std::free(buf);
    }
    c->Finish(UCS_OK);
  });
  c->Wait(Clock::now() + std::chrono::seconds(5));
  std::lock_guard<std::mutex> lock(c->mu);
  return c->raw_data;
}

void UcxTransport::Interrupt() {
  {
    std::lock_guard<std::mutex> lock(impl_->rx_mu);
    impl_->interrupts += 1;
    impl_->rx_cv.notify_all();
  }
  ucp_worker_signal(impl_->worker);  // a receiver driving the worker may sleep on its event fd
}

absl::StatusOr<Message> UcxTransport::Receive(std::chrono::milliseconds timeout) {
  Impl* impl = impl_.get();
  const auto deadline = Clock::now() + timeout;
  // What is queued already, or an interrupt; nullopt when there is neither.
  // With rx_mu held.
  auto take_locked = [impl]() -> std::optional<absl::StatusOr<Message>> {
    if (!impl->rx.empty()) {
      Message m = std::move(impl->rx.front());
      impl->rx.pop_front();
      return absl::StatusOr<Message>(std::move(m));
    }
    if (impl->interrupts > 0) {
      impl->interrupts -= 1;
      return absl::StatusOr<Message>(absl::CancelledError("interrupted"));
    }
    return std::nullopt;
  };
  auto take = [&]() {
    std::lock_guard<std::mutex> lock(impl->rx_mu);
    return take_locked();
  };
  std::optional<absl::StatusOr<Message>> got = take();
  while (!got && Clock::now() < deadline) {
    if (impl->DriveUntil(deadline, [&] { return (got = take()).has_value(); })) break;
    // Another thread drives: wait for what it queues, or for it to stop
    // driving (then this thread may drive).
    std::unique_lock<std::mutex> lock(impl->rx_mu);
    impl->rx_cv.wait_until(lock, deadline,
                           [&] { return !impl->rx.empty() || impl->interrupts > 0 || !impl->driving; });
    got = take_locked();
  }
  if (got) return std::move(*got);
  return absl::DeadlineExceededError(absl::StrCat("no data-plane message within ", timeout.count(), " ms"));
}

void UcxTransport::Recycle(Message&& m) { impl_->buffers.Give(std::move(m.data)); }

TransportStats UcxTransport::stats() const {
  TransportStats s;
  s.messages_sent = impl_->sent;
  s.bytes_sent = impl_->sent_bytes;
  s.messages_received = impl_->received;
  s.bytes_received = impl_->received_bytes;
  s.messages_rejected = impl_->rejected;
  s.messages_unauthenticated = impl_->unauthenticated;
  s.send_seconds = static_cast<double>(impl_->send_nanos.load()) * 1e-9;
  return s;
}

}  // namespace strata::transport

namespace strata::transport {
void UcxTransport::SetDataKey(const DataKey& key) { impl_->guard.SetKey(key); }
void UcxTransport::AddDataKey(const DataKey& key) { impl_->guard.AddKey(key); }
void UcxTransport::DropDataKey(uint64_t id) { impl_->guard.DropKey(id); }
}  // namespace strata::transport
