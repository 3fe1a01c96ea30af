// The paged KV block allocator of one pipeline replica. The router owns the
// block tables (workers are stateless apart from KV contents): every
// sequence's blocks come from here, and every step carries them.
#ifndef STRATA_ROUTER_BLOCK_MANAGER_H_
#define STRATA_ROUTER_BLOCK_MANAGER_H_

#include <cstdint>
#include <vector>

namespace strata::router {

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t used_blocks() const { return num_blocks_ - free_blocks(); }
  // Blocks a sequence needs to hold `tokens` tokens.
  int64_t BlocksFor(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // Grows `table` to hold `tokens` tokens; false (and no change) when there
  // are not enough free blocks.
  bool Grow(std::vector<int32_t>* table, int64_t tokens);
  // Returns every block of `table` and clears it.
  void Release(std::vector<int32_t>* table);

 private:
  int64_t num_blocks_;
  int64_t block_size_;
  std::vector<int32_t> free_;  // a stack: recently freed blocks are reused first
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_BLOCK_MANAGER_H_
