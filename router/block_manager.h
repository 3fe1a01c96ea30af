// The paged KV block allocator of one pipeline replica, with its prefix
// cache. The router owns the block tables (workers are stateless apart from
// KV contents): every sequence's blocks come from here, and every step
// carries them.
//
// Blocks are reference-counted: a sequence holds one reference on each
// block of its table, and a full block whose KV is computed can be
// published under its BlockHash, after which other sequences with the same
// prefix take references on it instead of computing it again. A block no
// sequence holds is free: either never published (reused first) or cached
// (kept with its contents for later hits, and evicted least recently used
// only when a new block is needed and no uncached one is left). A cached
// block is never written: sequences write only past their shared prefix.
//
// Not thread-safe: the scheduler's thread owns it.
#ifndef STRATA_ROUTER_BLOCK_MANAGER_H_
#define STRATA_ROUTER_BLOCK_MANAGER_H_

#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

#include "router/block_hash.h"

namespace strata::router {

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size);
  BlockManager(const BlockManager&) = delete;
  BlockManager& operator=(const BlockManager&) = delete;

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  // Blocks no sequence holds (cached ones included: they are evicted on
  // demand), and blocks some sequence holds.
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size() + lru_.size()); }
  int64_t used_blocks() const { return num_blocks_ - free_blocks(); }
  // Published blocks, held or not; and those no sequence holds.
  int64_t cached_blocks() const { return static_cast<int64_t>(by_hash_.size()); }
  int64_t evictable_blocks() const { return static_cast<int64_t>(lru_.size()); }
  // Cached blocks evicted to make room, since the start.
  uint64_t evictions() const { return evictions_; }
  int32_t refs(int32_t block) const { return blocks_[block].refs; }
  // Blocks a sequence needs to hold `tokens` tokens.
  int64_t BlocksFor(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // Grows `table` to hold `tokens` tokens with new blocks (uncached free
  // blocks first, then the least recently used cached ones, evicted); false
  // (and no change) when there are not enough free blocks.
  bool Grow(std::vector<int32_t>* table, int64_t tokens);
  // Drops the table's reference on each of its blocks and clears it. Blocks
  // are released last first, so a chain's tail is evicted before its head.
  void Release(std::vector<int32_t>* table);

  // How many of the leading `hashes` (at most `max_blocks`) are cached.
  int64_t Match(const std::vector<BlockHash>& hashes, int64_t max_blocks) const;
  // Appends the cached blocks of the longest cached prefix of `hashes` (at
  // most `max_blocks`) to `table`, which must be empty, taking a reference
  // on each; returns how many.
  int64_t AcquireCached(const std::vector<BlockHash>& hashes, int64_t max_blocks, std::vector<int32_t>* table);
  // Publishes a block the caller holds, full and with its KV computed,
  // under `hash`. A block already published, or a hash already cached in
  // another block (two sequences computed the same prefix at once), leaves
  // everything as it was: hits go to the first, this one stays private.
  void Publish(int32_t block, const BlockHash& hash);

 private:
  struct Block {
    int32_t refs = 0;
    bool cached = false;
    BlockHash hash;
    std::list<int32_t>::iterator lru;  // valid while cached with no references
  };

  int32_t TakeFree();

  int64_t num_blocks_;
  int64_t block_size_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;  // uncached, unreferenced: a stack, recently freed reused first
  std::list<int32_t> lru_;     // cached, unreferenced: least recently released first
  std::unordered_map<BlockHash, int32_t, BlockHashHasher> by_hash_;
  uint64_t evictions_ = 0;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_BLOCK_MANAGER_H_
