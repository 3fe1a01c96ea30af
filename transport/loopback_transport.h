// The in-process twin of UcxTransport: endpoints of one LoopbackNetwork
// deliver to each other through memory, with the same contract (validated
// messages, Interrupt, asynchronous sends, stats). Tests of the fleet, the
// pipeline driver and the worker's data loop run over it, and inject the
// faults a real network has: a peer that drops what it is sent (a result
// that never comes), sends that fail or never complete, and raw bytes
// (malformed messages), without processes or sockets.
//
// Thread-safe: any thread may call any method.
#ifndef STRATA_TRANSPORT_LOOPBACK_TRANSPORT_H_
#define STRATA_TRANSPORT_LOOPBACK_TRANSPORT_H_

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/transport.h"

namespace strata::transport {

class LoopbackTransport;

// Owns the address space of its endpoints; outlives them.
class LoopbackNetwork {
 public:
  LoopbackNetwork() = default;
  LoopbackNetwork(const LoopbackNetwork&) = delete;
  LoopbackNetwork& operator=(const LoopbackNetwork&) = delete;

  // A new endpoint, listening at "loopback:N".
  std::unique_ptr<LoopbackTransport> Listen();

  // Faults, by the address of the receiving endpoint:
  // what is sent there is accepted and silently lost;
  void DropTo(const std::string& address, bool drop);
  // sends there fail with `status` (OK clears the fault);
  void FailSendsTo(const std::string& address, absl::Status status);
  // sends there never complete until the fault is cleared (a hung peer).
  void HangSendsTo(const std::string& address, bool hang);

  // Delivers raw header and data bytes to `address` as a receiver would see
  // them off the wire: validated, counted as rejected when malformed.
  absl::Status DeliverRaw(const std::string& address, const std::string& header, const std::string& data);

  struct Endpoint;

 private:
  friend class LoopbackTransport;
  std::shared_ptr<Endpoint> Find(const std::string& address);

  std::mutex mu_;
  int next_port_ = 1;
  std::map<std::string, std::weak_ptr<Endpoint>> endpoints_;
};

class LoopbackTransport : public Transport {
 public:
  ~LoopbackTransport() override;

  std::string address() const override;
  absl::StatusOr<int> Connect(const HostPort& peer) override;
  void Disconnect(int peer) override;
  absl::Status Send(int peer, const WireHeader& header, const std::vector<Bytes>& parts,
                    std::chrono::milliseconds timeout) override;
  absl::StatusOr<std::unique_ptr<PendingSend>> SendAsync(int peer, const WireHeader& header,
                                                         const std::vector<Bytes>& parts) override;
  absl::Status Wait(PendingSend* send, std::chrono::milliseconds timeout) override;
  absl::StatusOr<Message> Receive(std::chrono::milliseconds timeout) override;
  void Interrupt() override;
  TransportStats stats() const override;
  void SetDataKey(const DataKey& key) override;
  void AddDataKey(const DataKey& key) override;
  void DropDataKey(uint64_t id) override;

 private:
  friend class LoopbackNetwork;
  LoopbackTransport(LoopbackNetwork* network, std::shared_ptr<LoopbackNetwork::Endpoint> self);

  LoopbackNetwork* network_;
  std::shared_ptr<LoopbackNetwork::Endpoint> self_;
  mutable std::mutex mu_;
  std::vector<std::string> peers_;  // peer id -> address
};

}  // namespace strata::transport

#endif  // STRATA_TRANSPORT_LOOPBACK_TRANSPORT_H_
