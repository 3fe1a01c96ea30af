// Authenticated data-plane messages. UCX has no TLS (RDMA inside a rack is
// not encrypted), so each message carries an HMAC-SHA256 tag instead, made
// with a data key the router hands out over the mutual-TLS control plane
// (RegisterResponse): the tag covers the header (its tag field zero), the
// plan, and a StepResult's payload (the encoded result); activations'
// tensors are not covered (their cost would be a read of every byte; the
// plan they travel with is). A receiver that holds a key drops, and
// counts, every message whose key id is not its key's (stale: another
// router epoch, or a sender without the key) or whose tag is wrong.
#ifndef STRATA_TRANSPORT_MESSAGE_AUTH_H_
#define STRATA_TRANSPORT_MESSAGE_AUTH_H_

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "transport/wire.h"

namespace strata::transport {

struct Bytes;

struct DataKey {
  uint64_t id = 0;  // 0: no key known yet (nothing verifies)
  std::array<uint8_t, 32> bytes{};
};

// A fresh random key (OpenSSL's RAND_bytes) with a random nonzero id.
DataKey NewDataKey();

// Sets header->key_id and header->mac for a message of `parts`.
void SignMessage(const DataKey& key, WireHeader* header, const std::vector<Bytes>& parts);
// The message's key id is key.id (nonzero) and its tag is right.
bool VerifyMessage(const DataKey& key, const WireHeader& header, const uint8_t* data, size_t size);

// A transport's side of it: off until a key is set; then every message sent
// is signed and every message received must verify. Thread-safe.
class MessageGuard {
 public:
  void SetKey(const DataKey& key);
  void Sign(WireHeader* header, const std::vector<Bytes>& parts) const;  // nothing when off
  bool Admit(const WireHeader& header, const uint8_t* data, size_t size) const;  // true when off

 private:
  mutable std::mutex mu_;
  bool on_ = false;
  DataKey key_;
};

}  // namespace strata::transport

#endif  // STRATA_TRANSPORT_MESSAGE_AUTH_H_
