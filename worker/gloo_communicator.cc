#include "worker/gloo_communicator.h"

#include <algorithm>
#include <cstdio>
#include <exception>

#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/buffer.h>
#include <gloo/transport/pair.h>
#include <gloo/transport/tcp/device.h>

#include "absl/strings/str_cat.h"
#include "worker/rank_order_sum.h"

namespace strata::worker {

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    gloo::rendezvous::Store* store, const std::string& prefix, const std::string& host, int rank, int size,
    std::chrono::milliseconds timeout, bool shared_memory) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("Gloo rank ", rank, " is outside [0, ", size, ")"));
  }
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = host;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->setTimeout(timeout);
    gloo::rendezvous::PrefixStore prefixed(prefix, *store);
    context->connectFullMesh(prefixed, device);
    // Every pair is connected on both sides before anyone uses (or drops)
    // the group.
    gloo::BarrierOptions barrier(context);
    barrier.setTimeout(timeout);
    gloo::barrier(barrier);
    std::unique_ptr<ShmExchange> shm;
    if (shared_memory && size > 1) {
      absl::StatusOr<std::unique_ptr<ShmExchange>> joined = ShmExchange::Join(prefixed, "shm", rank, size, timeout);
      if (joined.ok()) {
        shm = std::move(*joined);
      } else if (joined.status().code() == absl::StatusCode::kNotFound) {
        if (rank == 0) {
          std::fprintf(stderr, "tensor-parallel group %s: over TCP, not shared memory: %s\n", prefix.c_str(),
                       std::string(joined.status().message()).c_str());
        }
      } else {
        return joined.status();
      }
    }
    std::shared_ptr<gloo::rendezvous::Context> direct;
    if (shm == nullptr) {
      // The direct exchange's own connections, in Gloo's synchronous mode:
      // the calling thread writes and reads the sockets itself (blocking,
      // with the group's timeout as the sockets' timeout), so a message
      // costs one wake-up of the waiting thread and no work on Gloo's
      // device thread. Every rank takes this branch or none (the join
      // above is agreed by all).
      direct = std::make_shared<gloo::rendezvous::Context>(rank, size);
      direct->setTimeout(timeout);
      gloo::rendezvous::PrefixStore direct_prefixed(prefix + "/direct", *store);
      direct->connectFullMesh(direct_prefixed, device);
      for (int q = 0; q < size; ++q) {
        if (q != rank) direct->getPair(q)->setSync(/*sync=*/true, /*busyPoll=*/false);
      }
      gloo::barrier(barrier);  // these pairs too, on both sides
    }
    return std::unique_ptr<GlooCommunicator>(
        new GlooCommunicator(std::move(context), std::move(direct), std::move(shm), rank, size, timeout));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("Gloo rank ", rank, " of ", size, " could not join group \"",
                                               prefix, "\" on ", host, ": ", e.what()));
  }
}

GlooCommunicator::GlooCommunicator(std::shared_ptr<gloo::Context> context, std::shared_ptr<gloo::Context> direct,
                                   std::unique_ptr<ShmExchange> shm, int rank, int size,
                                   std::chrono::milliseconds timeout)
    : context_(std::move(context)),
      direct_(std::move(direct)),
      shm_(std::move(shm)),
      rank_(rank),
      size_(size),
      timeout_(timeout),
      parts_(static_cast<size_t>(size)) {}

GlooCommunicator::~GlooCommunicator() = default;

absl::Status GlooCommunicator::Failed(absl::Status s) {
  failure_ = absl::UnavailableError(absl::StrCat("an earlier collective of this Gloo group failed: ", s.message()));
  return s;
}

absl::Status GlooCommunicator::AllReduceSum(float* data, int64_t n) {
  if (n == 0 || size_ == 1) return absl::OkStatus();
  if (!failure_.ok()) return failure_;
  if (shm_) {
    absl::Status s = shm_->AllReduceSum(data, n);
    return s.ok() ? s : Failed(s);
  }
  try {
    // Every rank takes the same branch: n is the same on all of them.
    if ((size_ - 1) * n * static_cast<int64_t>(sizeof(float)) <= kDirectMaxBytes) {
      DirectAllReduce(data, n);
    } else {
      RingAllReduce(data, n);
    }
  } catch (const std::exception& e) {
    return Failed(absl::UnavailableError(absl::StrCat("Gloo all-reduce of ", n, " floats failed on rank ", rank_,
                                                      ": ", e.what())));
  }
  return absl::OkStatus();
}

static_assert(GlooCommunicator::kInboxBytes >= GlooCommunicator::kDirectMaxBytes,
              "a direct all-reduce fits the inboxes whole");

void GlooCommunicator::RegisterInboxes() {
  // The whole room at once (kInboxBytes per parity), for the life of the
  // group: every direct all-reduce fits, and all-gathers go in windows of it.
  const int64_t capacity = kInboxBytes / static_cast<int64_t>(sizeof(float)) / (size_ - 1);
  const int peers = size_ - 1;
  inbox_memory_.assign(static_cast<size_t>(2 * peers * capacity), 0.0f);
  // Slot of the message from rank s to rank d in parity k: one block,
  // drawn in the same order on every rank.
  inbox_slot_ = direct_->nextSlot(2 * size_ * size_);
  for (int k = 0; k < 2; ++k) {
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      const int peer = q < rank_ ? q : q - 1;
      float* memory = inbox_memory_.data() + (k * peers + peer) * capacity;
      inboxes_.push_back(direct_->getPair(q)->createRecvBuffer(inbox_slot_ + (k * size_ + q) * size_ + rank_, memory,
                                                                capacity * sizeof(float)));
    }
  }
  inbox_capacity_ = capacity;
}

size_t GlooCommunicator::SyncPieceBytes() {
  static const size_t piece = [] {
    size_t cap = 212992;  // Linux's default net.core.wmem_max
    if (std::FILE* f = std::fopen("/proc/sys/net/core/wmem_max", "r")) {
      unsigned long long v = 0;
      if (std::fscanf(f, "%llu", &v) == 1 && v > 0) cap = static_cast<size_t>(v);
      std::fclose(f);
    }
    return std::clamp<size_t>(cap / 2 / 4096 * 4096, size_t{64} << 10, size_t{1} << 20);
  }();
  return piece;
}

void GlooCommunicator::Exchange(const float* data, size_t bytes, int k) {
  const int peers = size_ - 1;
  // A send buffer is a plain object over `data` (only receive buffers are
  // registered with a pair), so one per call costs an allocation.
  std::vector<std::unique_ptr<gloo::transport::Buffer>> sends;
  sends.reserve(peers);
  for (int q = 0; q < size_; ++q) {
    if (q == rank_) continue;
    sends.push_back(direct_->getPair(q)->createSendBuffer(inbox_slot_ + (k * size_ + rank_) * size_ + q,
                                                          const_cast<float*>(data), bytes));
  }
  const size_t piece = SyncPieceBytes();
  for (size_t off = 0; off < bytes; off += piece) {
    const size_t len = std::min(piece, bytes - off);
    for (auto& s : sends) {
      s->send(off, len, off);
      s->waitSend();  // written already (synchronous mode): this counts it
    }
    for (int peer = 0; peer < peers; ++peer) inboxes_[k * peers + peer]->waitRecv();
  }
}

void GlooCommunicator::DirectAllReduce(float* data, int64_t n) {
  if (inbox_capacity_ == 0) RegisterInboxes();  // n fits: n * 4 <= kDirectMaxBytes / (size - 1)
  const int k = static_cast<int>(direct_calls_++ & 1);
  const int peers = size_ - 1;
  Exchange(data, static_cast<size_t>(n) * sizeof(float), k);
  const float* inbox = inbox_memory_.data() + k * peers * inbox_capacity_;
  for (int q = 0; q < size_; ++q) parts_[q] = q == rank_ ? data : inbox + (q < rank_ ? q : q - 1) * inbox_capacity_;
  SumInRankOrder(parts_.data(), size_, n, data);
}

void GlooCommunicator::RingAllReduce(float* data, int64_t n) {
  gloo::AllreduceOptions opts(context_);
  // The output alone: an input too would add a copy of it into the output.
  opts.setOutput(data, static_cast<size_t>(n));
  // Ring: each element is summed once, by its chunk's owner, and then
  // broadcast, so every rank ends with bitwise the same values.
  opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
  opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
  opts.setTag(tag_++);
  opts.setTimeout(timeout_);
  gloo::allreduce(opts);
}

absl::Status GlooCommunicator::AllGather(const float* in, int64_t n, float* out) {
  if (size_ == 1) {
    std::copy_n(in, n, out);
    return absl::OkStatus();
  }
  if (!failure_.ok()) return failure_;
  if (shm_) {
    absl::Status s = shm_->AllGather(in, n, out);
    return s.ok() ? s : Failed(s);
  }
  try {
    DirectAllGather(in, n, out);
  } catch (const std::exception& e) {
    return Failed(absl::UnavailableError(absl::StrCat("Gloo all-gather of ", n, " floats failed on rank ", rank_,
                                                      ": ", e.what())));
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::GatherColumnsToRoot(const float* in, int64_t rows, int64_t cols, float* out) {
  if (size_ == 1) {
    std::copy_n(in, rows * cols, out);
    return absl::OkStatus();
  }
  if (!failure_.ok()) return failure_;
  if (!shm_) return absl::UnimplementedError("the gather to rank 0 runs through shared memory only; use AllGather");
  absl::Status s = shm_->GatherColumnsToRoot(in, rows, cols, out);
  return s.ok() ? s : Failed(s);
}

void GlooCommunicator::DirectAllGather(const float* in, int64_t n, float* out) {
  std::copy_n(in, n, out + rank_ * n);
  if (inbox_capacity_ == 0) RegisterInboxes();
  const int peers = size_ - 1;
  // Windows of the inboxes' size, each an exchange of its own (and parity).
  for (int64_t off = 0; off < n; off += inbox_capacity_) {
    const int64_t len = std::min(inbox_capacity_, n - off);
    const int k = static_cast<int>(direct_calls_++ & 1);
    Exchange(in + off, static_cast<size_t>(len) * sizeof(float), k);
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      const int peer = q < rank_ ? q : q - 1;
      std::copy_n(inbox_memory_.data() + (k * peers + peer) * inbox_capacity_, len, out + q * n + off);
    }
  }
}

absl::Status SingleRankCommunicator::AllGather(const float* in, int64_t n, float* out) {
  std::copy_n(in, n, out);
  return absl::OkStatus();
}

absl::Status SingleRankCommunicator::GatherColumnsToRoot(const float* in, int64_t rows, int64_t cols, float* out) {
  std::copy_n(in, rows * cols, out);
  return absl::OkStatus();
}

}  // namespace strata::worker
