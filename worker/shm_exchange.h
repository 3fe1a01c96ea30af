// Collectives among the tensor-parallel ranks of one stage when they share
// a host: through one shared-memory segment instead of TCP. Each rank
// copies its contribution into its own slot, publishes a sequence number
// and reads its peers' slots; a rank that finds a peer not there yet spins
// briefly, then sleeps on a futex in the segment that every publisher rings.
// Sums run in rank order over the slots, so every rank ends bitwise equal.
//
// Slots come in two parities that alternate between calls: a rank writes a
// slot of call c only after every peer published call c - 1, i.e. after
// every peer finished reading the slots of call c - 2, the other parity's
// last use. Buffers larger than a slot go in windows, a call each.
//
// Joining goes through the group's rendezvous store: rank 0 creates the
// segment under a random name and posts the name and a random token; the
// others map it and check the token; every rank posts whether it could,
// and the segment is used only if all could and all share one pid namespace
// (ranks on different hosts, or in containers without a common /dev/shm,
// cannot open the name; ranks in different pid namespaces could not see a
// peer's exit: the group stays on Gloo's TCP). Rank 0 unlinks the name once
// all have mapped it, so nothing is left behind when a process dies. A peer
// that does not arrive within the timeout, that left the group (destroyed
// its exchange), or whose process is gone (checked by pid every 100 ms of
// waiting) fails the call with UNAVAILABLE.
#ifndef STRATA_WORKER_SHM_EXCHANGE_H_
#define STRATA_WORKER_SHM_EXCHANGE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gloo::rendezvous {
class Store;
}

namespace strata::worker {

class ShmExchange {
 public:
  static constexpr int kMaxRanks = 64;
  // Bytes of one rank's slot of one parity: the window of a call.
  static constexpr int64_t kSlotBytes = 1 << 20;

  // Joins `size` ranks through `store` (keys under `key`); every rank calls
  // it at the same point. NOT_FOUND (with the reason) when the ranks do not
  // all share the segment: the caller uses another path, as do all ranks.
  // Other errors: the store failed.
  static absl::StatusOr<std::unique_ptr<ShmExchange>> Join(gloo::rendezvous::Store& store, const std::string& key,
                                                           int rank, int size, std::chrono::milliseconds timeout);
  ~ShmExchange();
  ShmExchange(const ShmExchange&) = delete;
  ShmExchange& operator=(const ShmExchange&) = delete;

  // data[0, n) = the sum over ranks of every rank's data[0, n), in rank order.
  absl::Status AllReduceSum(float* data, int64_t n);
  // out[r * n, (r + 1) * n) = rank r's in[0, n).
  absl::Status AllGather(const float* in, int64_t n, float* out);
  // Communicator::GatherColumnsToRoot: rank 0's out[i * size * cols + r *
  // cols + j] = rank r's in[i * cols + j]; rank 0 writes no slot and the
  // others read none (their out is not touched and may be null).
  absl::Status GatherColumnsToRoot(const float* in, int64_t rows, int64_t cols, float* out);

 public:
  struct Header;  // the segment's first page(s), defined in the .cc

 private:
  ShmExchange(void* base, size_t bytes, int rank, int size, std::chrono::milliseconds timeout);
  float* Slot(int parity, int rank) const;
  // Copies `len` floats of `src` (none when null: a slot nobody reads) into
  // this rank's slot of the next call, publishes it and waits for every
  // peer's; *parity: the call's slots.
  absl::Status ExchangeWindow(const float* src, int64_t len, int* parity);
  // Says this rank's slot of `call` is written, and wakes sleeping peers.
  void Publish(uint64_t call);
  // Returns once every peer published `call`; UNAVAILABLE after the timeout
  // or when a late peer's process is gone.
  absl::Status WaitForPeers(uint64_t call);

  void* base_;
  size_t bytes_;
  Header* header_;
  int rank_, size_;
  std::chrono::milliseconds timeout_;
  std::vector<const float*> parts_;  // every rank's slot of a call, for the sum (no allocation per call)
  uint64_t calls_ = 0;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_SHM_EXCHANGE_H_
