#include "worker/gloo_communicator.h"

#include <algorithm>
#include <exception>

#include <gloo/allgather.h>
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

namespace strata::worker {

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    gloo::rendezvous::Store* store, const std::string& prefix, const std::string& host, int rank, int size,
    std::chrono::milliseconds timeout) {
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
    return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(context, rank, size, timeout));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("Gloo rank ", rank, " of ", size, " could not join group \"",
                                               prefix, "\" on ", host, ": ", e.what()));
  }
}

GlooCommunicator::GlooCommunicator(std::shared_ptr<gloo::Context> context, int rank, int size,
                                   std::chrono::milliseconds timeout)
    : context_(std::move(context)), rank_(rank), size_(size), timeout_(timeout) {}

GlooCommunicator::~GlooCommunicator() = default;

absl::Status GlooCommunicator::Failed(absl::Status s) {
  failure_ = absl::UnavailableError(absl::StrCat("an earlier collective of this Gloo group failed: ", s.message()));
  return s;
}

absl::Status GlooCommunicator::AllReduceSum(float* data, int64_t n) {
  if (n == 0 || size_ == 1) return absl::OkStatus();
  if (!failure_.ok()) return failure_;
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

void GlooCommunicator::GrowInboxes(int64_t n) {
  inboxes_.clear();  // unregistered before the memory goes
  // The largest direct exchange's room at once (8 MiB per peer at most), so
  // the inboxes never grow again: after a growth a fast rank's message for
  // the new slots could reach a peer that has not registered them yet, and
  // Gloo's device thread would spin until it does.
  const int64_t capacity = std::max<int64_t>(n, kDirectMaxBytes / static_cast<int64_t>(sizeof(float)) / (size_ - 1));
  const int peers = size_ - 1;
  inbox_memory_.assign(static_cast<size_t>(2 * peers * capacity), 0.0f);
  // Slot of the message from rank s to rank d in parity k: one block per
  // generation, drawn in the same order on every rank.
  inbox_slot_ = context_->nextSlot(2 * size_ * size_);
  for (int k = 0; k < 2; ++k) {
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      const int peer = q < rank_ ? q : q - 1;
      float* memory = inbox_memory_.data() + (k * peers + peer) * capacity;
      inboxes_.push_back(context_->getPair(q)->createRecvBuffer(inbox_slot_ + (k * size_ + q) * size_ + rank_, memory,
                                                                capacity * sizeof(float)));
    }
  }
  inbox_capacity_ = capacity;
  direct_calls_ = 0;
}

void GlooCommunicator::DirectAllReduce(float* data, int64_t n) {
  if (n > inbox_capacity_) GrowInboxes(n);
  const int k = static_cast<int>(direct_calls_++ & 1);
  const int peers = size_ - 1;
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  // A send buffer is a plain object over `data` (only receive buffers are
  // registered with the pair), so one per call costs an allocation.
  std::vector<std::unique_ptr<gloo::transport::Buffer>> sends;
  sends.reserve(peers);
  try {
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      sends.push_back(context_->getPair(q)->createSendBuffer(inbox_slot_ + (k * size_ + rank_) * size_ + q, data,
                                                              bytes));
      sends.back()->send(0, bytes, 0);
    }
    for (int peer = 0; peer < peers; ++peer) inboxes_[k * peers + peer]->waitRecv();
    // `data` is read by the sends until they complete.
    for (auto& s : sends) s->waitSend();
  } catch (...) {
    // The device thread may still hold a send in flight; its buffer lives
    // as long as the group.
    for (auto& s : sends) abandoned_sends_.push_back(std::move(s));
    throw;
  }
  const float* inbox = inbox_memory_.data() + k * peers * inbox_capacity_;
  if (size_ == 2) {
    // a + b == b + a, so both ranks agree bitwise.
    for (int64_t i = 0; i < n; ++i) data[i] += inbox[i];
    return;
  }
  // Rank order on every rank: ((x0 + x1) + x2) + ...
  std::vector<const float*> from(size_);
  for (int q = 0; q < size_; ++q) {
    from[q] = q == rank_ ? data : inbox + (q < rank_ ? q : q - 1) * inbox_capacity_;
  }
  for (int64_t i = 0; i < n; ++i) {
    float sum = from[0][i];
    for (int q = 1; q < size_; ++q) sum += from[q][i];
    data[i] = sum;
  }
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
  try {
    gloo::AllgatherOptions opts(context_);
    opts.setInput(const_cast<float*>(in), static_cast<size_t>(n));
    opts.setOutput(out, static_cast<size_t>(n * size_));
    opts.setTag(tag_++);
    opts.setTimeout(timeout_);
    gloo::allgather(opts);
  } catch (const std::exception& e) {
    return Failed(absl::UnavailableError(absl::StrCat("Gloo all-gather of ", n, " floats failed on rank ", rank_,
                                                      ": ", e.what())));
  }
  return absl::OkStatus();
}

absl::Status SingleRankCommunicator::AllGather(const float* in, int64_t n, float* out) {
  std::copy_n(in, n, out);
  return absl::OkStatus();
}

}  // namespace strata::worker
