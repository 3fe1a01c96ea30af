// The rendezvous store of one stage's tensor-parallel ranks: rank 0 serves a
// small key-value store over TCP; every rank (rank 0 included) joins through
// a client. Gloo exchanges its pair addresses through it, and CUDA workers
// pass the NCCL unique id the same way, so a stage needs one address
// (--tp-store HOST:PORT) and nothing shared on disk.
//
// Wire format, both directions: op (1 byte: 'S' set, 'G' get), key length
// (u32 LE), key, value length (u32 LE), value; the reply to a get is a found
// byte, value length, value. Keys are at most 4 KiB and values 16 MiB; a
// peer that breaks the format is disconnected.
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

namespace strata::worker {

class TcpStoreServer {
 public:
  // Listens on host:port (port 0 picks one; see port()).
  static absl::StatusOr<std::unique_ptr<TcpStoreServer>> Start(const std::string& host, int port);
  ~TcpStoreServer();
  int port() const { return port_; }

 private:
  TcpStoreServer(int fd, int port);
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
  std::thread accept_thread_;
};

// A gloo Store over one TCP connection to a TcpStoreServer. get() and wait()
// poll until the keys exist or the timeout passes; errors are thrown as
// gloo::IoException, as gloo's own stores do (the communicator catches them).
class TcpStoreClient : public gloo::rendezvous::Store {
 public:
  // Connects to host:port, retrying until `timeout` (the server's rank may
  // start later than this one).
  static absl::StatusOr<std::unique_ptr<TcpStoreClient>> Connect(const std::string& host, int port,
                                                                 std::chrono::milliseconds timeout);
  ~TcpStoreClient() override;

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

  // Status-returning forms for callers outside gloo.
  absl::Status Set(const std::string& key, const std::string& value);
  absl::StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout);

 private:
  TcpStoreClient(int fd, std::chrono::milliseconds timeout) : fd_(fd), timeout_(timeout) {}
  // One request; found/value filled for gets.
  absl::Status Request(char op, const std::string& key, const std::vector<char>& value, bool* found,
                       std::vector<char>* out);

  int fd_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_TCP_STORE_H_
