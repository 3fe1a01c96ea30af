// Identities of full KV blocks for prefix caching. A block's hash covers its
// tokens and the hash of the block before it, and the chain starts from the
// model's identity, so two blocks hash alike only when everything before
// and in them is alike: equal hashes mean the same KV contents.
//
// SHA-256 (OpenSSL), not a 64-bit hash: a collision would silently hand one
// request another's KV (wrong tokens, and a prefix of someone else's
// prompt), and prompts are caller input, so a hash an attacker can collide
// on purpose is not acceptable. Hashing is a few microseconds per block,
// next to milliseconds of prefill per block.
#ifndef STRATA_ROUTER_BLOCK_HASH_H_
#define STRATA_ROUTER_BLOCK_HASH_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace strata::router {

struct BlockHash {
  std::array<uint8_t, 32> bytes{};
  bool operator==(const BlockHash& o) const { return bytes == o.bytes; }
  bool operator!=(const BlockHash& o) const { return bytes != o.bytes; }
};

// For hash maps: the digest's first 8 bytes are already uniform.
struct BlockHashHasher {
  size_t operator()(const BlockHash& h) const {
    size_t v;
    std::memcpy(&v, h.bytes.data(), sizeof(v));
    return v;
  }
};

// The hash every chain starts from: SHA-256 of a version tag and `model`.
BlockHash RootHash(const std::string& model);
// SHA-256 of `parent` and `tokens` (little-endian int32 each).
BlockHash ChainHash(const BlockHash& parent, const int32_t* tokens, size_t count);
// Extends `hashes` (the chain of the first hashes->size() full blocks of
// `tokens`) to cover every full block of `tokens`, up to `max_blocks`.
void ExtendBlockHashes(const BlockHash& root, const std::vector<int32_t>& tokens, int64_t block_size,
                       int64_t max_blocks, std::vector<BlockHash>* hashes);

}  // namespace strata::router

#endif  // STRATA_ROUTER_BLOCK_HASH_H_
