// The seam between the serving code and the data plane: connect to a peer by
// address, send a header plus byte ranges (sent without copying where the
// transport allows), receive whole, validated messages. UcxTransport is the
// implementation; LoopbackTransport is its in-process twin for unit tests
// (faults injected through its LoopbackNetwork); both keep this contract.
#ifndef STRATA_TRANSPORT_TRANSPORT_H_
#define STRATA_TRANSPORT_TRANSPORT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/address.h"
#include "transport/message_auth.h"
#include "transport/wire.h"

namespace strata::transport {

// A byte range to send; must stay valid until Send returns.
struct Bytes {
  const void* data = nullptr;
  size_t size = 0;
};

// An allocator whose resize leaves new bytes uninitialized: a transport
// writes every byte of a message it receives, and zeroing a 64 KiB buffer
// first cost more than UCX's copy into it (docs/benchmarks.md).
template <class T>
struct UninitializedAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <class U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
  // Only value-initialization changes (to default-initialization: no
  // zeroing for bytes); with arguments, allocator_traits constructs as usual.
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
};
using MessageBytes = std::vector<uint8_t, UninitializedAllocator<uint8_t>>;

struct Message {
  WireHeader header;
  MessageBytes data;  // plan bytes then payload bytes
  // When the transport queued it for Receive (the start of the receiver's
  // queue wait).
  std::chrono::steady_clock::time_point received = std::chrono::steady_clock::now();

  const uint8_t* plan() const { return data.data(); }
  const uint8_t* payload() const { return data.data() + header.plan_bytes; }
};

struct TransportStats {
  uint64_t messages_sent = 0, bytes_sent = 0;
  uint64_t messages_received = 0, bytes_received = 0;
  uint64_t messages_rejected = 0;  // failed validation or authentication, dropped
  uint64_t messages_unauthenticated = 0;  // of those: a wrong tag or a stale key id
  double send_seconds = 0;         // total time inside Send
};

// A send in flight (Transport::SendAsync). Its parts must stay valid until
// Transport::Wait returns for it; destroying it unwaited waits (bounded).
class PendingSend {
 public:
  virtual ~PendingSend() = default;
  // True once the send completed (either way): Wait then returns at once.
  virtual bool Done() const = 0;
  // Set by a successful Wait: from the start of the send to its completion.
  double transfer_seconds = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // The address peers connect to (host:port as it listens).
  virtual std::string address() const = 0;
  // Opens (or reuses) a connection; returns a peer id for Send.
  virtual absl::StatusOr<int> Connect(const HostPort& peer) = 0;
  // Drops the connection to `peer` (sends still on it fail): the next
  // Connect to its address opens a new one. A process at that address may
  // have been replaced (its pipeline went down); on shared memory a
  // connection to a dead process can look alive for good.
  virtual void Disconnect(int peer) = 0;
  // Sends one message (header.plan_bytes + header.payload_bytes must equal
  // the parts' total) and returns when the parts may be reused. One part
  // goes out contiguous (UCX's fastest protocols; over TCP several parts
  // cost about 3x at 4 MiB), several as an IOV without copying. A dead or
  // stuck peer is UNAVAILABLE or DEADLINE_EXCEEDED, never a hang.
  virtual absl::Status Send(int peer, const WireHeader& header, const std::vector<Bytes>& parts,
                            std::chrono::milliseconds timeout) = 0;
  // Starts the same send and returns at once, so the caller can compute
  // while the bytes travel (a pipeline stage sends step n's activations
  // while it runs step n+1). Wait reports the outcome, as Send would.
  virtual absl::StatusOr<std::unique_ptr<PendingSend>> SendAsync(int peer, const WireHeader& header,
                                                                 const std::vector<Bytes>& parts) = 0;
  virtual absl::Status Wait(PendingSend* send, std::chrono::milliseconds timeout) = 0;
  // The next valid message, DEADLINE_EXCEEDED after `timeout`, or
  // CANCELLED when Interrupt was called (once per call of Interrupt).
  virtual absl::StatusOr<Message> Receive(std::chrono::milliseconds timeout) = 0;
  // Hands back a message this transport delivered, once its bytes are no
  // longer needed, so that a later receive reuses its buffer (optional: a
  // message simply destroyed is freed).
  virtual void Recycle(Message&& m) { (void)m; }
  // Wakes a Receive (from any thread): an event loop that also has other
  // work (new requests) sleeps in Receive and is woken for it.
  virtual void Interrupt() = 0;
  virtual TransportStats stats() const = 0;
  // From now on every message sent carries a tag made with `key`, and a
  // message received is dropped (counted as rejected and unauthenticated)
  // unless it verifies with it (transport/message_auth.h). A key with id 0
  // drops everything until a real one is set (a worker not yet registered).
  virtual void SetDataKey(const DataKey& key) = 0;
  // The router's form: `key` beside the others (one per pipeline epoch; a
  // send uses the key its header's key_id names), and forgetting one.
  virtual void AddDataKey(const DataKey& key) = 0;
  virtual void DropDataKey(uint64_t id) = 0;
};

}  // namespace strata::transport

#endif  // STRATA_TRANSPORT_TRANSPORT_H_
