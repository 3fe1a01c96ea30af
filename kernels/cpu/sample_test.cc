// Backend::Sample of the host backends (reference, and cpu at 1 and 3
// threads) against a plain oracle on seeded random logits over vocab sizes
// odd and even, small and the real 128256: tokens equal the plain sampler's,
// top-n ids equal a full sort's, every log-probability within
// atol + rtol * |ref| of a long-double log softmax. Results are poisoned
// first, so a field left unwritten fails.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/reference/reference_backend.h"
#include "kernels/reference/sampling.h"

namespace strata::kernels {
namespace {

constexpr float kAtol = 1e-5f, kRtol = 1e-5f;

SampleResult Poisoned() {
  SampleResult r;
  r.token = -7;
  r.logprob = r.target_logprob = 1234567.0f;
  r.num_top = 99;
  for (TokenLogprob& t : r.top) t = {-7, 1234567.0f};
  return r;
}

// A request mix that covers every field: greedy and tempered draws with
// top-k / top-p, logprobs -1 .. 20, targets, and rows that ask nothing.
std::vector<SampleRequest> Requests(int64_t rows, int64_t vocab) {
  std::vector<SampleRequest> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    SampleRequest& q = out[r];
    q.sample = r % 5 != 4;
    q.params.temperature = r % 3 == 0 ? 0.0f : 0.4f + 0.3f * (r % 4);
    q.params.top_k = r % 4 == 1 ? 5 : 0;
    q.params.top_p = r % 4 == 2 ? 0.8f : 1.0f;
    q.params.seed = 77 + r;
    q.params.step = r;
    q.logprobs = std::min<int32_t>(static_cast<int32_t>(r % 23) - 1, kMaxTopLogprobs);
    q.target = r % 2 == 0 ? static_cast<int32_t>((r * 7919) % vocab) : -1;
  }
  return out;
}

struct Oracle {
  std::vector<long double> logprob;  // [vocab]
  std::vector<int32_t> order;        // ids, logit descending, id ascending
};
Oracle PlainLogSoftmax(const float* row, int64_t vocab) {
  Oracle o;
  const float mx = *std::max_element(row, row + vocab);
  long double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<long double>(row[i]) - mx);
  for (int64_t i = 0; i < vocab; ++i) o.logprob.push_back(static_cast<long double>(row[i]) - mx - std::log(sum));
  o.order.resize(vocab);
  for (int64_t i = 0; i < vocab; ++i) o.order[i] = static_cast<int32_t>(i);
  std::sort(o.order.begin(), o.order.end(), [&](int32_t a, int32_t b) {
    return row[a] > row[b] || (row[a] == row[b] && a < b);
  });
  return o;
}

void ExpectClose(float got, long double want, const std::string& what) {
  EXPECT_LE(std::fabs(got - want), kAtol + kRtol * std::fabs(want)) << what << ": got " << got << " want "
                                                                    << static_cast<double>(want);
}

void ExpectMatchesOracle(const float* row, int64_t vocab, const SampleRequest& q, const SampleResult& r,
                         const std::string& where) {
  const Oracle o = PlainLogSoftmax(row, vocab);
  EXPECT_EQ(r.token, q.sample ? reference::Sample(row, vocab, q.params) : -1) << where;
  const bool logprob = q.sample && q.logprobs >= 0;
  if (logprob) ExpectClose(r.logprob, o.logprob[r.token], where + " logprob");
  if (q.target >= 0) ExpectClose(r.target_logprob, o.logprob[q.target], where + " target");
  const int64_t n = logprob ? std::min<int64_t>(q.logprobs, vocab) : 0;
  ASSERT_EQ(r.num_top, n) << where;
  for (int64_t k = 0; k < n; ++k) {
    EXPECT_EQ(r.top[k].token, o.order[k]) << where << " top " << k;
    ExpectClose(r.top[k].logprob, o.logprob[o.order[k]], absl::StrCat(where, " top ", k));
  }
}

std::vector<std::unique_ptr<Backend>> HostBackends() {
  std::vector<std::unique_ptr<Backend>> out;
  out.push_back(std::make_unique<ReferenceBackend>(1));
  for (int threads : {1, 3}) {
    cpu::CpuBackendOptions o;
    o.threads = threads;
    out.push_back(std::make_unique<cpu::CpuBackend>(o));
  }
  return out;
}

TEST(HostSampleTest, MatchesThePlainOracleOnEveryBackend) {
  std::mt19937 rng(13);
  for (int64_t vocab : {1, 2, 7, 1000, 4099, 128256}) {
    const int64_t rows = vocab >= 100000 ? 6 : 45;
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> logits(rows * vocab);
    for (float& x : logits) x = normal(rng);
    // Even rows: a tie for the top; the lower id comes first.
    for (int64_t r = 0; r < rows && vocab >= 7; r += 2) logits[r * vocab + 3] = logits[r * vocab + 5] = 50.0f;
    const std::vector<SampleRequest> requests = Requests(rows, vocab);
    std::vector<SampleResult> first;
    for (const auto& backend : HostBackends()) {
      auto buffer = backend->AllocateBuffer(rows * vocab);
      ASSERT_TRUE(buffer.ok());
      ASSERT_TRUE(backend->CopyFromHost(logits.data(), rows * vocab, (*buffer)->data()).ok());
      std::vector<SampleResult> results(rows, Poisoned());
      ASSERT_TRUE(backend->Sample((*buffer)->data(), vocab, requests, absl::MakeSpan(results)).ok());
      for (int64_t r = 0; r < rows; ++r) {
        ExpectMatchesOracle(logits.data() + r * vocab, vocab, requests[r], results[r],
                            absl::StrCat(backend->Name(), " vocab ", vocab, " row ", r));
      }
      if (vocab >= 7) {
        EXPECT_EQ(results[0].token, 3);
      }
      // Every host backend gives the same bits.
      if (first.empty()) {
        first = results;
        continue;
      }
      for (int64_t r = 0; r < rows; ++r) {
        EXPECT_EQ(std::memcmp(&results[r], &first[r], sizeof(SampleResult)), 0)
            << backend->Name() << " vocab " << vocab << " row " << r;
      }
    }
  }
}

TEST(HostSampleTest, BadRequestWritesNothing) {
  for (const auto& backend : HostBackends()) {
    std::vector<float> logits(2 * 10, 0.5f);
    std::vector<SampleRequest> requests(2);
    requests[1].target = 10;
    std::vector<SampleResult> results(2, Poisoned());
    absl::Status s = backend->Sample(logits.data(), 10, requests, absl::MakeSpan(results));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << backend->Name();
    for (const SampleResult& r : results) {
      const SampleResult p = Poisoned();
      EXPECT_EQ(std::memcmp(&r, &p, sizeof(r)), 0);
    }
  }
}

TEST(HostSampleTest, KvBytesPerValueFollowsTheStorage) {
  EXPECT_EQ(ReferenceBackend().KvBytesPerValue(), 4);
  cpu::CpuBackendOptions o;
  EXPECT_EQ(cpu::CpuBackend(o).KvBytesPerValue(), 2);
  o.kv_dtype = model::DType::kF32;
  EXPECT_EQ(cpu::CpuBackend(o).KvBytesPerValue(), 4);
  EXPECT_EQ(ReferenceBackend().NativeStream(), nullptr);
  EXPECT_EQ(cpu::CpuBackend().NativeStream(), nullptr);
}

}  // namespace
}  // namespace strata::kernels
