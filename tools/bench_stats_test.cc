#include "tools/bench_stats.h"

#include <cmath>

#include "gtest/gtest.h"

namespace strata::tools {
namespace {

// numpy.percentile's linear interpolation: rank p * (n - 1).
TEST(QuantileTest, InterpolatesBetweenRanksAsNumpyDoes) {
  const std::vector<double> v = {4, 1, 3, 2, 5};  // unsorted on purpose
  const struct {
    double p, want;
  } cases[] = {{0, 1}, {0.5, 3}, {0.9, 4.6}, {0.99, 4.96}, {1, 5}, {0.25, 2}, {0.1, 1.4}};
  for (const auto& c : cases) EXPECT_NEAR(Quantile(v, c.p), c.want, 1e-12) << c.p;
  // numpy.percentile(range(1, 101), [50, 90, 99]) = 50.5, 90.1, 99.01
  std::vector<double> hundred;
  for (int i = 1; i <= 100; ++i) hundred.push_back(i);
  EXPECT_NEAR(Quantile(hundred, 0.5), 50.5, 1e-9);
  EXPECT_NEAR(Quantile(hundred, 0.9), 90.1, 1e-9);
  EXPECT_NEAR(Quantile(hundred, 0.99), 99.01, 1e-9);
}

TEST(QuantileTest, OneValueAndNone) {
  EXPECT_EQ(Quantile({7}, 0.99), 7);
  EXPECT_TRUE(std::isnan(Quantile({}, 0.5)));
}

TEST(DistributionTest, MeanAndQuantilesOrNullsForNone) {
  const nlohmann::json d = Distribution({1, 2, 3, 4});
  EXPECT_DOUBLE_EQ(d["mean"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(d["p50"].get<double>(), 2.5);
  EXPECT_NEAR(d["p90"].get<double>(), 3.7, 1e-12);
  EXPECT_NEAR(d["p95"].get<double>(), 3.85, 1e-12);
  EXPECT_NEAR(d["p99"].get<double>(), 3.97, 1e-12);
  const nlohmann::json none = Distribution({});
  for (const char* k : {"mean", "p50", "p90", "p95", "p99"}) EXPECT_TRUE(none[k].is_null()) << k;
}

TEST(StatusCodeNameTest, GrpcNames) {
  EXPECT_EQ(StatusCodeName(0), "OK");
  EXPECT_EQ(StatusCodeName(4), "DEADLINE_EXCEEDED");
  EXPECT_EQ(StatusCodeName(8), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeName(14), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(17), "CODE_17");
  EXPECT_EQ(StatusCodeName(-1), "CODE_-1");
}

// Two completed requests and one refused: throughputs over the run's
// seconds, TTFT over the requests with a first token, TPOT and end to end
// over the completed ones, codes by name.
TEST(SummarizeTest, CountsAndLatencies) {
  std::vector<RequestSample> s(3);
  s[0] = {0, 0.1, 1.1, {0.2, 0.3}, 5, 10};  // TPOT (1.1 - 0.1) / 4 = 0.25
  s[1] = {0, 0.3, 0.6, {0.1}, 3, 12};       // TPOT 0.15
  s[2] = {8, -1, 0.01, {}, 0, 7};          // refused: its prompt is not counted
  const nlohmann::json j = Summarize(s, 2.0);
  EXPECT_EQ(j["requests"], 3);
  EXPECT_EQ(j["completed"], 2);
  EXPECT_EQ(j["codes"], (nlohmann::json{{"OK", 2}, {"RESOURCE_EXHAUSTED", 1}}));
  EXPECT_DOUBLE_EQ(j["request_throughput"].get<double>(), 1.0);
  EXPECT_EQ(j["output_tokens"], 8);
  EXPECT_EQ(j["prompt_tokens"], 22);
  EXPECT_DOUBLE_EQ(j["output_tokens_per_s"].get<double>(), 4.0);
  EXPECT_NEAR(j["ttft_s"]["mean"].get<double>(), 0.2, 1e-12);
  EXPECT_NEAR(j["inter_token_s"]["p50"].get<double>(), 0.2, 1e-12);
  EXPECT_NEAR(j["tpot_s"]["mean"].get<double>(), 0.2, 1e-12);
  EXPECT_NEAR(j["latency_s"]["p50"].get<double>(), 0.85, 1e-12);
  EXPECT_NEAR(j["latency_s"]["p99"].get<double>(), 0.6 + 0.5 * 0.99, 1e-12);
  const std::string text = FormatSummary(j);
  EXPECT_NE(text.find("3 (OK 2, RESOURCE_EXHAUSTED 1)"), std::string::npos) << text;
  EXPECT_NE(text.find("time to first token"), std::string::npos) << text;
  EXPECT_NE(text.find("850.00"), std::string::npos) << text;  // end to end p50 in ms
}

TEST(SummarizeTest, NoRequestsPrintsDashes) {
  const nlohmann::json j = Summarize({}, 1.0);
  EXPECT_EQ(j["requests"], 0);
  EXPECT_TRUE(j["ttft_s"]["p50"].is_null());
  const std::string text = FormatSummary(j);
  EXPECT_NE(text.find("0 (none)"), std::string::npos) << text;
  EXPECT_NE(text.find(" -"), std::string::npos) << text;
}

}  // namespace
}  // namespace strata::tools
