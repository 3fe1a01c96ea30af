// Authenticated data-plane messages. UCX has no TLS (RDMA inside a rack is
// not encrypted), so each message carries an HMAC-SHA256 tag instead, made
// with a data key the router makes fresh for each pipeline epoch (every
// warm-up of a replica) and hands to that replica's workers over the
// mutual-TLS control plane (Worker.SetDataKey): the tag covers the header (its tag field zero), the
// plan, and a StepResult's payload (the encoded result); activations'
// tensors are not covered (their cost would be a read of every byte; the
// plan they travel with is). A receiver that holds a key drops, and
// counts, every message whose key id is not one of its keys (stale: an
// earlier epoch of the pipeline, another pipeline, or a sender without the
// key) or whose tag is wrong.
#ifndef STRATA_TRANSPORT_MESSAGE_AUTH_H_
#define STRATA_TRANSPORT_MESSAGE_AUTH_H_

#include <array>
#include <cstdint>
#include <map>
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

// A transport's side of it: off until a key is set; then every message
// received must verify with one of its keys, and every message sent is
// signed with the key its header names (key_id), or with the one key set
// by SetKey when the header names none. Thread-safe.
class MessageGuard {
 public:
  // On, with `key` as the only key (a worker: its pipeline's current key;
  // id 0: on with no key, everything dropped).
  void SetKey(const DataKey& key);
  // On, with `key` beside the others (the router: one per pipeline epoch);
  // DropKey forgets one (the epoch ended: its messages are stale).
  void AddKey(const DataKey& key);
  void DropKey(uint64_t id);
  void Sign(WireHeader* header, const std::vector<Bytes>& parts) const;  // nothing when off
  bool Admit(const WireHeader& header, const uint8_t* data, size_t size) const;  // true when off

 private:
  mutable std::mutex mu_;
  bool on_ = false;
  uint64_t default_id_ = 0;
  std::map<uint64_t, DataKey> keys_;
};

}  // namespace strata::transport

#endif  // STRATA_TRANSPORT_MESSAGE_AUTH_H_
