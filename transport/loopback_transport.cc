#include "transport/loopback_transport.h"

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace strata::transport {

using Clock = std::chrono::steady_clock;

struct LoopbackNetwork::Endpoint {
  std::string address;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Message> rx;
  int interrupts = 0;
  bool closed = false;
  // Faults (set through the network).
  bool drop = false;
  bool hang = false;
  absl::Status fail;
  // Stats of this endpoint as a receiver and as a sender.
  TransportStats stats;
  MessageGuard guard;  // this endpoint's data key

  // Validates and queues one message; false when it was malformed.
  bool Deliver(const void* header, size_t header_length, MessageBytes data) {
    std::lock_guard<std::mutex> lock(mu);
    if (!ValidateHeader(header, header_length, data.size()).ok()) {
      stats.messages_rejected += 1;
      return false;
    }
    if (drop || closed) return true;
    WireHeader h;
    std::memcpy(&h, header, sizeof(h));
    if (!guard.Admit(h, data.data(), data.size())) {
      stats.messages_rejected += 1;
      stats.messages_unauthenticated += 1;
      return true;  // dropped on arrival, as a network peer would
    }
    Message m;
    std::memcpy(&m.header, header, sizeof(WireHeader));
    m.data = std::move(data);
    m.received = Clock::now();
    stats.messages_received += 1;
    stats.bytes_received += m.data.size();
    rx.push_back(std::move(m));
    cv.notify_one();
    return true;
  }
};

namespace {

MessageBytes Gather(const std::vector<Bytes>& parts) {
  size_t total = 0;
  for (const Bytes& b : parts) total += b.size;
  MessageBytes out(total);
  size_t at = 0;
  for (const Bytes& b : parts) {
    if (b.size > 0) std::memcpy(out.data() + at, b.data, b.size);
    at += b.size;
  }
  return out;
}

// A send that completes when its receiver is not hung: the bytes were
// copied when it was posted, as UCX's eager protocol does.
class LoopbackSend : public PendingSend {
 public:
  LoopbackSend(std::shared_ptr<LoopbackNetwork::Endpoint> dest, WireHeader header, MessageBytes data)
      : dest_(std::move(dest)), header_(header), data_(std::move(data)), start_(Clock::now()) {}

  bool Done() const override {
    std::lock_guard<std::mutex> lock(mu_);
    if (delivered_) return true;
    {
      std::lock_guard<std::mutex> dl(dest_->mu);
      if (dest_->hang) return false;
    }
    dest_->Deliver(&header_, sizeof(header_), std::move(data_));
    delivered_ = true;
    return true;
  }
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  std::shared_ptr<LoopbackNetwork::Endpoint> dest_;
  WireHeader header_;
  mutable MessageBytes data_;
  Clock::time_point start_;
  mutable std::mutex mu_;
  mutable bool delivered_ = false;
};

}  // namespace

std::unique_ptr<LoopbackTransport> LoopbackNetwork::Listen() {
  auto e = std::make_shared<Endpoint>();
  std::lock_guard<std::mutex> lock(mu_);
  e->address = absl::StrCat("loopback:", next_port_++);
  endpoints_[e->address] = e;
  return std::unique_ptr<LoopbackTransport>(new LoopbackTransport(this, e));
}

std::shared_ptr<LoopbackNetwork::Endpoint> LoopbackNetwork::Find(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = endpoints_.find(address);
  return it == endpoints_.end() ? nullptr : it->second.lock();
}

void LoopbackNetwork::DropTo(const std::string& address, bool drop) {
  if (auto e = Find(address)) {
    std::lock_guard<std::mutex> lock(e->mu);
    e->drop = drop;
  }
}

void LoopbackNetwork::FailSendsTo(const std::string& address, absl::Status status) {
  if (auto e = Find(address)) {
    std::lock_guard<std::mutex> lock(e->mu);
    e->fail = std::move(status);
  }
}

void LoopbackNetwork::HangSendsTo(const std::string& address, bool hang) {
  if (auto e = Find(address)) {
    std::lock_guard<std::mutex> lock(e->mu);
    e->hang = hang;
  }
}

absl::Status LoopbackNetwork::DeliverRaw(const std::string& address, const std::string& header,
                                         const std::string& data) {
  auto e = Find(address);
  if (!e) return absl::UnavailableError(absl::StrCat("no loopback endpoint at ", address));
  e->Deliver(header.data(), header.size(), MessageBytes(data.begin(), data.end()));
  return absl::OkStatus();
}

LoopbackTransport::LoopbackTransport(LoopbackNetwork* network, std::shared_ptr<LoopbackNetwork::Endpoint> self)
    : network_(network), self_(std::move(self)) {}

LoopbackTransport::~LoopbackTransport() {
  std::lock_guard<std::mutex> lock(self_->mu);
  self_->closed = true;
  self_->rx.clear();
}

std::string LoopbackTransport::address() const { return self_->address; }

absl::StatusOr<int> LoopbackTransport::Connect(const HostPort& peer) {
  const std::string address = peer.ToString();
  if (!network_->Find(address)) return absl::UnavailableError(absl::StrCat("no loopback endpoint at ", address));
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < peers_.size(); ++i) {
    if (peers_[i] == address) return static_cast<int>(i);
  }
  peers_.push_back(address);
  return static_cast<int>(peers_.size() - 1);
}

void LoopbackTransport::Disconnect(int peer) {
  std::lock_guard<std::mutex> lock(mu_);
  if (peer >= 0 && peer < static_cast<int>(peers_.size())) peers_[peer].clear();  // the id stays dead
}

absl::StatusOr<std::unique_ptr<PendingSend>> LoopbackTransport::SendAsync(int peer, const WireHeader& header,
                                                                          const std::vector<Bytes>& parts) {
  std::string address;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (peer < 0 || peer >= static_cast<int>(peers_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("unknown peer ", peer));
    }
    address = peers_[peer];
    if (address.empty()) return absl::UnavailableError(absl::StrCat("peer ", peer, " was disconnected"));
  }
  MessageBytes data = Gather(parts);
  if (static_cast<uint64_t>(header.plan_bytes) + header.payload_bytes != data.size()) {
    return absl::InvalidArgumentError(absl::StrCat("header announces ", header.plan_bytes, " + ",
                                                   header.payload_bytes, " bytes but the parts hold ", data.size()));
  }
  auto dest = network_->Find(address);
  if (!dest) return absl::UnavailableError(absl::StrCat("loopback peer ", address, " is gone"));
  {
    std::lock_guard<std::mutex> lock(dest->mu);
    if (!dest->fail.ok()) return dest->fail;
  }
  {
    std::lock_guard<std::mutex> lock(self_->mu);
    self_->stats.messages_sent += 1;
    self_->stats.bytes_sent += data.size();
  }
  WireHeader signed_header = header;
  self_->guard.Sign(&signed_header, parts);
  auto send = std::make_unique<LoopbackSend>(std::move(dest), signed_header, std::move(data));
  (void)send->Done();  // delivers at once unless the receiver hangs
  return std::unique_ptr<PendingSend>(std::move(send));
}

absl::Status LoopbackTransport::Wait(PendingSend* send, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!send->Done()) {
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("send not complete within ", timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  send->transfer_seconds = static_cast<LoopbackSend*>(send)->elapsed();
  return absl::OkStatus();
}

absl::Status LoopbackTransport::Send(int peer, const WireHeader& header, const std::vector<Bytes>& parts,
                                     std::chrono::milliseconds timeout) {
  auto send = SendAsync(peer, header, parts);
  if (!send.ok()) return send.status();
  return Wait(send->get(), timeout);
}

absl::StatusOr<Message> LoopbackTransport::Receive(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(self_->mu);
  if (!self_->cv.wait_for(lock, timeout, [&] { return !self_->rx.empty() || self_->interrupts > 0; })) {
    return absl::DeadlineExceededError(absl::StrCat("no data-plane message within ", timeout.count(), " ms"));
  }
  if (self_->rx.empty()) {
    self_->interrupts -= 1;
    return absl::CancelledError("interrupted");
  }
  Message m = std::move(self_->rx.front());
  self_->rx.pop_front();
  return m;
}

void LoopbackTransport::Interrupt() {
  std::lock_guard<std::mutex> lock(self_->mu);
  self_->interrupts += 1;
  self_->cv.notify_all();
}

TransportStats LoopbackTransport::stats() const {
  std::lock_guard<std::mutex> lock(self_->mu);
  return self_->stats;
}

}  // namespace strata::transport

namespace strata::transport {
void LoopbackTransport::SetDataKey(const DataKey& key) { self_->guard.SetKey(key); }
void LoopbackTransport::AddDataKey(const DataKey& key) { self_->guard.AddKey(key); }
void LoopbackTransport::DropDataKey(uint64_t id) { self_->guard.DropKey(id); }
}  // namespace strata::transport
