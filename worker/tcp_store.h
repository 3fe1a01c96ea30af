// The rendezvous store of one stage's tensor-parallel ranks: rank 0 serves a
// small key-value store over TCP; every rank (rank 0 included) joins through
// a client. Gloo exchanges its pair addresses through it, and CUDA workers
// pass the NCCL unique id the same way, so a stage needs one address
// (--tp-store HOST:PORT) and nothing shared on disk.
//
// Wire format, both directions: op (1 byte: 'S' set, 'G' get), key length
// (u32 LE), key, value length (u32 LE), value; the reply to a get is a found
// byte, value length, value. Keys are at most 4 KiB and values 16 MiB; a
// peer that breaks the format is disconnected. With TLS material (the
// control plane's --mtls-* files) the connection is mutual TLS: server
// and client each present a certificate of the CA and check the other's,
// so a process without one cannot read or write the rendezvous.
#ifndef STRATA_WORKER_TCP_STORE_H_
#define STRATA_WORKER_TCP_STORE_H_

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gloo/rendezvous/store.h>

#include "absl/status/statusor.h"
#include "base/tls.h"

namespace strata::worker {

struct StoreConn;  // a socket and its TLS session (tcp_store.cc)

class TcpStoreServer {
 public:
  // Listens on host:port (port 0 picks one; see port()); mutual TLS with
  // `tls` (null: plaintext).
  static absl::StatusOr<std::unique_ptr<TcpStoreServer>> Start(const std::string& host, int port,
                                                               const base::TlsMaterial* tls = nullptr);
  ~TcpStoreServer();
  int port() const { return port_; }
  // Connections whose TLS handshake failed (no or a foreign certificate).
  int refused() const { return refused_.load(); }

 private:
  TcpStoreServer(int fd, int port, SSL_CTX* tls);
  void AcceptLoop();
  void Serve(int fd);

  int listen_fd_;
  int port_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<std::string, std::vector<char>> data_;
  std::vector<int> clients_;
  std::vector<std::thread> threads_;
  size_t stored_bytes_ = 0;  // guarded by mu_
  SSL_CTX* tls_ = nullptr;    // owned; null: plaintext
  std::atomic<int> refused_{0};
  std::thread accept_thread_;
};

// A gloo Store over one TCP connection to a TcpStoreServer. get() and wait()
// poll until the keys exist or the timeout passes; errors are thrown as
// gloo::IoException, as gloo's own stores do (the communicator catches them).
class TcpStoreClient : public gloo::rendezvous::Store {
 public:
  // Connects to host:port, retrying until `timeout` (the server's rank may
  // start later than this one); mutual TLS with `tls` (UNAUTHENTICATED when
  // the handshake fails).
  static absl::StatusOr<std::unique_ptr<TcpStoreClient>> Connect(const std::string& host, int port,
                                                                 std::chrono::milliseconds timeout,
                                                                 const base::TlsMaterial* tls = nullptr);
  ~TcpStoreClient() override;

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

  // Status-returning forms for callers outside gloo.
  absl::Status Set(const std::string& key, const std::string& value);
  absl::StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout);

 private:
  TcpStoreClient(std::unique_ptr<StoreConn> conn, std::chrono::milliseconds timeout);
  // One request; found/value filled for gets.
  absl::Status Request(char op, const std::string& key, const std::vector<char>& value, bool* found,
                       std::vector<char>* out);

  std::unique_ptr<StoreConn> conn_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_TCP_STORE_H_
