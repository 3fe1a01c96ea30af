// The data plane over UCX active messages (ucp). A progress thread drives
// the UCX worker whenever no caller does: it accepts connections, receives
// messages (eager ones copied once out of UCX's buffer, rendezvous ones
// received straight into the message's own buffer) and moves rendezvous
// transfers on while this process computes. A thread waiting in Receive,
// or for a send, drives the worker itself meanwhile (the progress thread
// waits), and sends start on the caller's thread, so a small message
// crosses no thread hand-off on either side. Idle, whoever drives sleeps
// on the worker's event fd, so an idle process uses no CPU. Transports are UCX's choice (UCX_TLS): shared memory
// and TCP on one host, TCP or RDMA across hosts, with no code change.
#ifndef STRATA_TRANSPORT_UCX_TRANSPORT_H_
#define STRATA_TRANSPORT_UCX_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/tls.h"
#include "transport/transport.h"

namespace strata::transport {

struct UcxOptions {
  HostPort listen;  // port 0 picks a free port
  // Spin this long after activity before sleeping on the event fd (latency
  // against CPU use); a driving caller spins as long after it begins to wait.
  std::chrono::microseconds spin{50};
  // UCX peer-failure handling (UCP_ERR_HANDLING_MODE_PEER): a dead peer
  // fails sends at once, with keepalive. UCX 1.13 cannot use its shared
  // memory transports in this mode, so a single-host deployment that wants
  // shared memory turns it off and relies on send timeouts and the router's
  // heartbeats instead.
  bool peer_failure_detection = true;
  // How long Connect waits for the connection to be established.
  std::chrono::milliseconds connect_timeout{5000};
  // The control plane's mutual TLS (null: plaintext): the UCX worker
  // address a peer needs to connect is handed only to a peer presenting a
  // certificate of the CA, and fetched only from one.
  const base::TlsMaterial* tls = nullptr;
};

class UcxTransport : public Transport {
 public:
  static absl::StatusOr<std::unique_ptr<UcxTransport>> Create(const UcxOptions& options);
  ~UcxTransport() override;

  std::string address() const override;
  absl::StatusOr<int> Connect(const HostPort& peer) override;
  void Disconnect(int peer) override;
  absl::Status Send(int peer, const WireHeader& header, const std::vector<Bytes>& parts,
                    std::chrono::milliseconds timeout) override;
  absl::StatusOr<std::unique_ptr<PendingSend>> SendAsync(int peer, const WireHeader& header,
                                                         const std::vector<Bytes>& parts) override;
  absl::Status Wait(PendingSend* send, std::chrono::milliseconds timeout) override;
  absl::StatusOr<Message> Receive(std::chrono::milliseconds timeout) override;
  void Recycle(Message&& m) override;
  void Interrupt() override;
  TransportStats stats() const override;
  void SetDataKey(const DataKey& key) override;
  void AddDataKey(const DataKey& key) override;
  void DropDataKey(uint64_t id) override;

  // UCX's description of the connection to `peer` (its lanes and
  // transports, from ucp_ep_print_info), for logs and tests.
  std::string DescribePeer(int peer);

  // Sends raw header bytes as they are, unchecked: for tests of the
  // receiver's validation only.
  absl::Status SendRawForTest(int peer, const std::string& header, const std::string& data,
                              std::chrono::milliseconds timeout);

  struct Impl;

 private:
  // SendAsync's work; `caller_waits`: the caller drives the send to its end
  // at once (Send), so the progress thread need not be woken for it.
  absl::StatusOr<std::unique_ptr<PendingSend>> Start(int peer, const WireHeader& header,
                                                     const std::vector<Bytes>& parts, bool caller_waits);
  explicit UcxTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata::transport

#endif  // STRATA_TRANSPORT_UCX_TRANSPORT_H_
