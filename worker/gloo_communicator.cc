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

absl::Status GlooCommunicator::AllReduceSum(float* data, int64_t n) {
  if (n == 0 || size_ == 1) return absl::OkStatus();
  try {
    gloo::AllreduceOptions opts(context_);
    opts.setInput(data, static_cast<size_t>(n));
    opts.setOutput(data, static_cast<size_t>(n));
    // Ring: each element is summed once, by its chunk's owner, and then
    // broadcast, so every rank ends with bitwise the same values.
    opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
    opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts.setTag(tag_++);
    opts.setTimeout(timeout_);
    gloo::allreduce(opts);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("Gloo all-reduce of ", n, " floats failed on rank ", rank_,
                                               ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::AllGather(const float* in, int64_t n, float* out) {
  if (size_ == 1) {
    std::copy_n(in, n, out);
    return absl::OkStatus();
  }
  try {
    gloo::AllgatherOptions opts(context_);
    opts.setInput(const_cast<float*>(in), static_cast<size_t>(n));
    opts.setOutput(out, static_cast<size_t>(n * size_));
    opts.setTag(tag_++);
    opts.setTimeout(timeout_);
    gloo::allgather(opts);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("Gloo all-gather of ", n, " floats failed on rank ", rank_,
                                               ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status SingleRankCommunicator::AllGather(const float* in, int64_t n, float* out) {
  std::copy_n(in, n, out);
  return absl::OkStatus();
}

}  // namespace strata::worker
