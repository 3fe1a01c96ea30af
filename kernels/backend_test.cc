#include "kernels/backend.h"

#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace strata::kernels {
namespace {

SampleRequest Sampling(float temperature, int32_t top_k, float top_p, int32_t logprobs) {
  SampleRequest r;
  r.sample = true;
  r.params.temperature = temperature;
  r.params.top_k = top_k;
  r.params.top_p = top_p;
  r.logprobs = logprobs;
  return r;
}

TEST(ValidateSampleRequestsTest, AcceptsTheWholeRange) {
  SampleRequest score;
  score.target = 9;
  std::vector<SampleRequest> ok = {Sampling(0, 0, 1, -1), Sampling(2, 5, 0.01f, kMaxTopLogprobs), score, {}};
  std::vector<SampleResult> results(ok.size());
  EXPECT_TRUE(ValidateSampleRequests(10, ok, results).ok());
  EXPECT_TRUE(ValidateSampleRequests(10, {}, {}).ok());
}

TEST(ValidateSampleRequestsTest, NamesTheRowAndField) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  SampleRequest far_target, negative_target;
  far_target.target = 10;
  negative_target.target = -2;
  // A row that does not sample is not checked for its sampling fields.
  SampleRequest idle = Sampling(-1, -1, 0, 99);
  idle.sample = false;
  const struct {
    SampleRequest request;
    std::string field;
  } cases[] = {
      {far_target, "target 10"},         {negative_target, "target -2"},
      {Sampling(1, 0, 1, 21), "logprobs"}, {Sampling(1, 0, 1, -2), "logprobs"},
      {Sampling(-1, 0, 1, 0), "temperature"}, {Sampling(nan, 0, 1, 0), "temperature"},
      {Sampling(1, -1, 1, 0), "top_k"},  {Sampling(1, 0, 0, 0), "top_p"},
      {Sampling(1, 0, 1.5f, 0), "top_p"}, {Sampling(1, 0, nan, 0), "top_p"},
  };
  for (const auto& c : cases) {
    std::vector<SampleRequest> requests = {idle, c.request};
    std::vector<SampleResult> results(2);
    absl::Status s = ValidateSampleRequests(10, requests, results);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(s.message().find("row 1: " + c.field), std::string::npos) << s.message();
  }
  std::vector<SampleRequest> one(1);
  std::vector<SampleResult> two(2);
  EXPECT_EQ(ValidateSampleRequests(10, one, two).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateSampleRequests(0, {}, {}).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata::kernels
