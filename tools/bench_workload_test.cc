#include "tools/bench_workload.h"

#include <cmath>
#include <map>

#include "gtest/gtest.h"

namespace strata::tools {
namespace {

TEST(LengthDistTest, FixedAlwaysGivesItsLength) {
  std::mt19937_64 rng(1);
  const LengthDist d = LengthDist::Fixed(17);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(d.Sample(rng), 17);
}

TEST(LengthDistTest, UniformCoversItsRangeEvenly) {
  std::mt19937_64 rng(7);
  auto d = LengthDist::Uniform(3, 6, "--x");
  ASSERT_TRUE(d.ok()) << d.status();
  std::map<int64_t, int> seen;
  constexpr int kDraws = 40000;
  for (int i = 0; i < kDraws; ++i) seen[d->Sample(rng)]++;
  ASSERT_EQ(seen.size(), 4u);
  for (const auto& [len, n] : seen) {
    EXPECT_GE(len, 3);
    EXPECT_LE(len, 6);
    EXPECT_NEAR(n, kDraws / 4, kDraws / 40) << len;  // within 10% of even
  }
}

TEST(LengthDistTest, UniformRefusesAnEmptyRangeNamingIt) {
  for (auto [lo, hi] : {std::pair<int64_t, int64_t>{5, 4}, {0, 4}, {-1, 3}}) {
    auto d = LengthDist::Uniform(lo, hi, "--prompt-tokens-min / --prompt-tokens-max");
    ASSERT_FALSE(d.ok()) << lo << ".." << hi;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(d.status().message().find("--prompt-tokens-min"), std::string::npos) << d.status();
  }
}

TEST(JsonlWorkloadTest, ParsesEachFormAndSkipsBlankLines) {
  auto w = ParseJsonlWorkload(
      "{\"prompt_tokens\": 128, \"output_tokens\": 64}\n"
      "\n"
      "  {\"prompt\": \"Tell me a story\", \"output_tokens\": 8}  \n"
      "{\"prompt_ids\": [1, 2, 3], \"output_tokens\": 2}",
      "w.jsonl");
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->size(), 3u);
  EXPECT_EQ((*w)[0].prompt_tokens, 128);
  EXPECT_EQ((*w)[0].output_tokens, 64);
  EXPECT_FALSE((*w)[0].has_text);
  EXPECT_TRUE((*w)[0].prompt_ids.empty());
  EXPECT_TRUE((*w)[1].has_text);
  EXPECT_EQ((*w)[1].prompt_text, "Tell me a story");
  EXPECT_EQ((*w)[1].output_tokens, 8);
  EXPECT_EQ((*w)[2].prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ((*w)[2].prompt_tokens, 3);
}

// Each bad line is named by its file and line number, with what is wrong.
TEST(JsonlWorkloadTest, BadLinesAreNamedByLineNumber) {
  const std::string good = "{\"prompt_tokens\": 4, \"output_tokens\": 4}\n";
  const struct {
    std::string line;
    std::string message;
  } cases[] = {
      {"not json", "not a JSON object"},
      {"[1, 2]", "not a JSON object"},
      {"{\"prompt_tokens\": 4, \"output_tokens\": 4", "not a JSON object"},
      {"{\"output_tokens\": 4}", "needs exactly one of"},
      {"{\"prompt_tokens\": 4, \"prompt\": \"x\", \"output_tokens\": 4}", "needs exactly one of"},
      {"{\"prompt_tokens\": 4}", "needs \"output_tokens\""},
      {"{\"prompt_tokens\": 0, \"output_tokens\": 4}", "\"prompt_tokens\" must be an integer in [1, 1048576], not 0"},
      {"{\"prompt_tokens\": 4, \"output_tokens\": 2.5}", "\"output_tokens\" must be an integer"},
      {"{\"prompt_tokens\": 4, \"output_tokens\": \"8\"}", "\"output_tokens\" must be an integer"},
      {"{\"prompt_tokens\": 4, \"output_tokens\": 2000000}", "\"output_tokens\" must be an integer"},
      {"{\"prompt\": \"\", \"output_tokens\": 4}", "\"prompt\" must be a non-empty string"},
      {"{\"prompt\": 7, \"output_tokens\": 4}", "\"prompt\" must be a non-empty string"},
      {"{\"prompt_ids\": [], \"output_tokens\": 4}", "\"prompt_ids\" must be a list"},
      {"{\"prompt_ids\": [1, -2], \"output_tokens\": 4}", "\"prompt_ids\": -2 is not a token id"},
      {"{\"prompt_ids\": [1, 3000000000], \"output_tokens\": 4}", "is not a token id"},
      {"{\"prompt_len\": 4, \"output_tokens\": 4}", "unknown key \"prompt_len\""},
  };
  for (const auto& c : cases) {
    // The bad line is line 3, after a good line and a blank one.
    auto w = ParseJsonlWorkload(good + "\n" + c.line + "\n" + good, "d.jsonl");
    ASSERT_FALSE(w.ok()) << c.line;
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string m(w.status().message());
    EXPECT_EQ(m.rfind("d.jsonl:3: ", 0), 0u) << c.line << " -> " << m;
    EXPECT_NE(m.find(c.message), std::string::npos) << c.line << " -> " << m;
  }
}

TEST(JsonlWorkloadTest, AFileWithoutRequestsIsAnError) {
  for (const char* text : {"", "\n\n  \n"}) {
    auto w = ParseJsonlWorkload(text, "empty.jsonl");
    ASSERT_FALSE(w.ok());
    EXPECT_NE(w.status().message().find("empty.jsonl: no requests"), std::string::npos) << w.status();
  }
}

TEST(RequestRateTest, InfAndZeroMeanAllAtOnce) {
  for (const char* t : {"inf", "0"}) {
    auto r = ParseRequestRate(t);
    ASSERT_TRUE(r.ok()) << t;
    EXPECT_TRUE(std::isinf(*r)) << t;
  }
  auto r = ParseRequestRate("2.5");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 2.5);
  for (const char* t : {"", "-1", "fast", "nan", "1e999", "-inf"}) {
    auto bad = ParseRequestRate(t);
    ASSERT_FALSE(bad.ok()) << t;
    EXPECT_NE(bad.status().message().find("--request-rate"), std::string::npos) << bad.status();
  }
}

TEST(ArrivalsTest, InfiniteRateIsAllAtOnce) {
  Arrivals a(std::numeric_limits<double>::infinity(), 1);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.Next(), 0.0);
}

// Poisson arrivals: the first at 0, nondecreasing, gaps of mean 1/rate and
// (exponential) a standard deviation equal to the mean; the same seed
// gives the same times.
TEST(ArrivalsTest, PoissonGapsHaveMeanOneOverRate) {
  constexpr double kRate = 4;
  constexpr int kN = 20000;
  Arrivals a(kRate, 3), again(kRate, 3);
  double prev = a.Next(), sum = 0, sum_sq = 0;
  EXPECT_EQ(prev, 0.0);
  EXPECT_EQ(again.Next(), 0.0);
  for (int i = 0; i < kN; ++i) {
    const double t = a.Next();
    EXPECT_EQ(t, again.Next());
    ASSERT_GE(t, prev);
    sum += t - prev;
    sum_sq += (t - prev) * (t - prev);
    prev = t;
  }
  const double mean = sum / kN;
  EXPECT_NEAR(mean, 1 / kRate, 0.05 / kRate);
  EXPECT_NEAR(std::sqrt(sum_sq / kN - mean * mean), 1 / kRate, 0.05 / kRate);
}

}  // namespace
}  // namespace strata::tools
