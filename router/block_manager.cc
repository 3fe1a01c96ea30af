#include "router/block_manager.h"

#include <cstdio>
#include <cstdlib>

namespace strata::router {
namespace {

[[noreturn]] void Broken(const char* what, int32_t block) {
  std::fprintf(stderr, "block manager: %s (block %d)\n", what, block);
  std::abort();
}

}  // namespace

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size)
    : num_blocks_(num_blocks), block_size_(block_size), blocks_(static_cast<size_t>(num_blocks)) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int32_t BlockManager::TakeFree() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else {
    b = lru_.front();
    lru_.pop_front();
    Block& evicted = blocks_[b];
    by_hash_.erase(evicted.hash);
    evicted.cached = false;
    ++evictions_;
  }
  if (blocks_[b].refs != 0) Broken("a free block is referenced", b);
  blocks_[b].refs = 1;
  return b;
}

bool BlockManager::Grow(std::vector<int32_t>* table, int64_t tokens) {
  const int64_t need = BlocksFor(tokens) - static_cast<int64_t>(table->size());
  if (need <= 0) return true;
  if (need > free_blocks()) return false;
  for (int64_t i = 0; i < need; ++i) table->push_back(TakeFree());
  return true;
}

void BlockManager::Release(std::vector<int32_t>* table) {
  for (auto it = table->rbegin(); it != table->rend(); ++it) {
    Block& b = blocks_[*it];
    if (b.refs <= 0) Broken("released a block nobody holds", *it);
    if (--b.refs > 0) continue;
    if (b.cached) {
      b.lru = lru_.insert(lru_.end(), *it);
    } else {
      free_.push_back(*it);
    }
  }
  table->clear();
}

int64_t BlockManager::Match(const std::vector<BlockHash>& hashes, int64_t max_blocks) const {
  int64_t n = 0;
  while (n < max_blocks && n < static_cast<int64_t>(hashes.size()) && by_hash_.count(hashes[n])) ++n;
  return n;
}

int64_t BlockManager::AcquireCached(const std::vector<BlockHash>& hashes, int64_t max_blocks,
                                    std::vector<int32_t>* table) {
  if (!table->empty()) Broken("a cached prefix goes at the start of an empty table", -1);
  const int64_t n = Match(hashes, max_blocks);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = by_hash_.at(hashes[i]);
    Block& b = blocks_[id];
    if (b.refs++ == 0) lru_.erase(b.lru);
    table->push_back(id);
  }
  return n;
}

void BlockManager::Publish(int32_t block, const BlockHash& hash) {
  Block& b = blocks_[block];
  if (b.refs <= 0) Broken("published a block nobody holds", block);
  if (b.cached || !by_hash_.emplace(hash, block).second) return;
  b.cached = true;
  b.hash = hash;
}

}  // namespace strata::router
