// Generate requests as scheduler sequences: the sampler's seed is the
// caller's when given, and a fresh one per request when not (so unseeded
// sampled requests differ, as OpenAI's do, while a request keeps its seed
// wherever it runs); bad sampling values name their field.
#include "router/validation.h"

#include <set>

#include "gtest/gtest.h"

namespace strata::router {
namespace {

Limits SomeLimits() {
  Limits l;
  l.vocab_size = 100;
  l.context_length = 1024;
  return l;
}

v1::GenerateRequest Sampled() {
  v1::GenerateRequest r;
  r.add_prompt_ids(1);
  r.add_prompt_ids(2);
  r.mutable_stop()->set_max_tokens(4);
  r.mutable_sampling()->set_temperature(1.0f);
  return r;
}

TEST(ValidationTest, AGivenSeedIsKeptAndAMissingOneIsDrawnPerRequest) {
  v1::GenerateRequest seeded = Sampled();
  seeded.mutable_sampling()->set_seed(0);  // zero is a seed like any other
  auto a = ValidateGenerate(seeded, SomeLimits());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->sampling.seed, 0u);
  seeded.mutable_sampling()->set_seed(12345);
  EXPECT_EQ(ValidateGenerate(seeded, SomeLimits())->sampling.seed, 12345u);
  std::set<uint64_t> drawn;
  for (int i = 0; i < 16; ++i) {
    auto s = ValidateGenerate(Sampled(), SomeLimits());
    ASSERT_TRUE(s.ok()) << s.status();
    drawn.insert(s->sampling.seed);
  }
  EXPECT_EQ(drawn.size(), 16u) << "unseeded requests must not share a seed";
}

TEST(ValidationTest, BadSamplingNamesTheField) {
  struct Case {
    float temperature, top_p;
    int32_t top_k;
    const char* field;
  };
  for (const Case& c : std::vector<Case>{{-1, 1, 0, "sampling.temperature"},
                                         {2.5f, 1, 0, "sampling.temperature"},
                                         {1, 1.5f, 0, "sampling.top_p"},
                                         {1, 1, -3, "sampling.top_k"}}) {
    v1::GenerateRequest r = Sampled();
    r.mutable_sampling()->set_temperature(c.temperature);
    r.mutable_sampling()->set_top_p(c.top_p);
    r.mutable_sampling()->set_top_k(c.top_k);
    auto s = ValidateGenerate(r, SomeLimits());
    ASSERT_FALSE(s.ok()) << c.field;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(c.field), std::string::npos) << s.status();
  }
}

}  // namespace
}  // namespace strata::router
