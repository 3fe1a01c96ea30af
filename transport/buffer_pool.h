// Receive buffers kept for reuse. A message that arrives by rendezvous is
// written by UCX straight into a buffer of the receiver's; a new heap
// buffer for every message cost UCX twice the copy itself (its pages and
// its registration are new each time: a 64 KiB hop took 11 us against 6 us
// into a buffer used before, docs/benchmarks.md). The transport takes a
// buffer here for each receive and its user hands the message back
// (Transport::Recycle) once done with it; a message never handed back is
// simply freed. A pipeline stage keeps its sent activations in one too
// (worker::StepRunner::Reuse), so each step writes into mapped pages.
#ifndef STRATA_TRANSPORT_BUFFER_POOL_H_
#define STRATA_TRANSPORT_BUFFER_POOL_H_

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "transport/transport.h"

namespace strata::transport {

class BufferPool {
 public:
  // Keeps at most `max_buffers` buffers and `max_bytes` of capacity in all.
  BufferPool(size_t max_buffers, size_t max_bytes) : max_buffers_(max_buffers), max_bytes_(max_bytes) {}

  // A buffer of `size` bytes, uninitialized: the smallest kept one whose
  // capacity holds it (and is at most 4x larger, so a small message does
  // not pin a prompt-sized buffer), else a new one.
  MessageBytes Take(size_t size);
  // Keeps `buffer` for a later Take if there is room, else frees it.
  void Give(MessageBytes buffer);

  size_t kept_buffers() const;
  size_t kept_bytes() const;

 private:
  const size_t max_buffers_, max_bytes_;
  mutable std::mutex mu_;
  std::vector<MessageBytes> kept_;  // under mu_
  size_t bytes_ = 0;                // their capacity, under mu_
};

}  // namespace strata::transport

#endif  // STRATA_TRANSPORT_BUFFER_POOL_H_
