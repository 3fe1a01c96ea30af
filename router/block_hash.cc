#include "router/block_hash.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace strata::router {
namespace {

BlockHash Sha256(const std::string& bytes) {
  BlockHash h;
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), h.bytes.data(), &length, EVP_sha256(), nullptr) != 1 ||
      length != h.bytes.size()) {
    // OpenSSL without SHA-256 is a broken installation, not a request error.
    std::fprintf(stderr, "block_hash: OpenSSL's SHA-256 failed\n");
    std::abort();
  }
  return h;
}

}  // namespace

BlockHash RootHash(const std::string& model) { return Sha256("strata prefix cache v1\n" + model); }

BlockHash ChainHash(const BlockHash& parent, const int32_t* tokens, size_t count) {
  std::string bytes(parent.bytes.begin(), parent.bytes.end());
  bytes.reserve(bytes.size() + 4 * count);
  for (size_t i = 0; i < count; ++i) {
    const uint32_t t = static_cast<uint32_t>(tokens[i]);
    for (int b = 0; b < 4; ++b) bytes.push_back(static_cast<char>((t >> (8 * b)) & 0xff));
  }
  return Sha256(bytes);
}

void ExtendBlockHashes(const BlockHash& root, const std::vector<int32_t>& tokens, int64_t block_size,
                       int64_t max_blocks, std::vector<BlockHash>* hashes) {
  const int64_t full = std::min<int64_t>(static_cast<int64_t>(tokens.size()) / block_size, max_blocks);
  for (int64_t b = static_cast<int64_t>(hashes->size()); b < full; ++b) {
    const BlockHash& parent = b == 0 ? root : (*hashes)[b - 1];
    hashes->push_back(ChainHash(parent, tokens.data() + b * block_size, static_cast<size_t>(block_size)));
  }
}

}  // namespace strata::router
