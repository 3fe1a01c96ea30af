// Each system library target links and answers one real call, so a missing
// Debian package or a wrong link flag fails here rather than in the first
// feature that needs it.
#include <gloo/config.h>
#include <gloo/rendezvous/hash_store.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <re2/re2.h>
#include <ucp/api/ucp.h>

#include <sstream>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

TEST(LinkTest, Ucx) {
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  EXPECT_GE(major, 1u);
}

TEST(LinkTest, Gloo) {
  gloo::rendezvous::HashStore store;
  store.set("k", std::vector<char>{'v'});
  EXPECT_EQ(store.get("k"), std::vector<char>{'v'});
}

TEST(LinkTest, PrometheusCpp) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter().Name("strata_link_test_total").Help("test").Register(*registry);
  family.Add({{"stage", "0"}}).Increment(3);
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry->Collect());
  EXPECT_NE(out.str().find("strata_link_test_total{stage=\"0\"} 3"), std::string::npos) << out.str();
}

TEST(LinkTest, Re2) {
  std::string word;
  EXPECT_TRUE(RE2::PartialMatch("tokens: hello", R"((\w+)$)", &word));
  EXPECT_EQ(word, "hello");
}

TEST(LinkTest, JsonAndBenchmarkHeaders) {
  EXPECT_EQ(nlohmann::json::parse("[1,2]").size(), 2u);
  int x = 1;
  benchmark::DoNotOptimize(x);
}

}  // namespace
