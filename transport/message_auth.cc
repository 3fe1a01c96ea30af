#include "transport/message_auth.h"

#include <algorithm>
#include <cstring>

#include "openssl/core_names.h"
#include "openssl/crypto.h"
#include "openssl/evp.h"
#include "openssl/params.h"
#include "openssl/rand.h"
#include "transport/transport.h"

namespace strata::transport {
namespace {

// The bytes the tag covers after the header: the plan, and a result's payload.
uint64_t CoveredBytes(const WireHeader& h) {
  return h.plan_bytes + (h.type == static_cast<uint16_t>(MessageType::kStepResult) ? h.payload_bytes : 0);
}

EVP_MAC* Hmac() {
  static EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  return mac;
}

// HMAC-SHA256 of the header (tag zeroed) then the first `covered` bytes of `parts`.
void Tag(const DataKey& key, const WireHeader& header, const std::vector<Bytes>& parts, uint64_t covered,
         uint8_t out[32]) {
  WireHeader h = header;
  std::memset(h.mac, 0, sizeof(h.mac));
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(Hmac());
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_END};
  EVP_MAC_init(ctx, key.bytes.data(), key.bytes.size(), params);
  EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(&h), sizeof(h));
  for (const Bytes& b : parts) {
    if (covered == 0) break;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(covered, b.size));
    EVP_MAC_update(ctx, static_cast<const unsigned char*>(b.data), n);
    covered -= n;
  }
  size_t len = 0;
  EVP_MAC_final(ctx, out, &len, 32);
  EVP_MAC_CTX_free(ctx);
}

}  // namespace

DataKey NewDataKey() {
  DataKey k;
  while (k.id == 0) RAND_bytes(reinterpret_cast<unsigned char*>(&k.id), sizeof(k.id));
  RAND_bytes(k.bytes.data(), static_cast<int>(k.bytes.size()));
  return k;
}

void SignMessage(const DataKey& key, WireHeader* header, const std::vector<Bytes>& parts) {
  header->key_id = key.id;
  Tag(key, *header, parts, CoveredBytes(*header), header->mac);
}

bool VerifyMessage(const DataKey& key, const WireHeader& header, const uint8_t* data, size_t size) {
  if (key.id == 0 || header.key_id != key.id) return false;
  const uint64_t covered = CoveredBytes(header);
  if (covered > size) return false;
  uint8_t expected[32];
  Tag(key, header, {Bytes{data, static_cast<size_t>(covered)}}, covered, expected);
  return CRYPTO_memcmp(expected, header.mac, sizeof(expected)) == 0;
}

void MessageGuard::SetKey(const DataKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  on_ = true;
  keys_.clear();
  default_id_ = key.id;
  if (key.id != 0) keys_[key.id] = key;
}

void MessageGuard::AddKey(const DataKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  on_ = true;
  if (key.id != 0) keys_[key.id] = key;
}

void MessageGuard::DropKey(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  keys_.erase(id);
  if (default_id_ == id) default_id_ = 0;
}

void MessageGuard::Sign(WireHeader* header, const std::vector<Bytes>& parts) const {
  DataKey key;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!on_) return;
    auto it = keys_.find(header->key_id != 0 ? header->key_id : default_id_);
    if (it == keys_.end()) return;  // no such key: the message goes unsigned and is dropped on arrival
    key = it->second;
  }
  SignMessage(key, header, parts);
}

bool MessageGuard::Admit(const WireHeader& header, const uint8_t* data, size_t size) const {
  DataKey key;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!on_) return true;
    auto it = keys_.find(header.key_id);
    if (it == keys_.end()) return false;
    key = it->second;
  }
  return VerifyMessage(key, header, data, size);
}

}  // namespace strata::transport
