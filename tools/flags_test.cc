#include "tools/flags.h"

#include "gtest/gtest.h"

namespace strata::tools {
namespace {

TEST(FlagsTest, ParsesBothSpellingsAndBooleans) {
  auto f = Flags::Parse({"--model", "m", "--max-tokens=5", "--json", "--prompt-ids", "1,2,3"},
                        {"model", "max-tokens", "json", "prompt-ids"}, {"json"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->GetString("model", ""), "m");
  EXPECT_EQ(*f->GetInt("max-tokens", 0, 1, 10), 5);
  EXPECT_TRUE(f->GetBool("json"));
  EXPECT_EQ(*f->GetIntList("prompt-ids", 0, 100), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(*f->GetInt("absent", 7, 0, 10), 7);
}

TEST(FlagsTest, ErrorsNameTheFlag) {
  const std::set<std::string> known = {"n", "ids", "b"};
  EXPECT_NE(Flags::Parse({"--zzz", "1"}, known, {"b"}).status().message().find("--zzz"), std::string::npos);
  EXPECT_NE(Flags::Parse({"--n"}, known, {"b"}).status().message().find("needs a value"), std::string::npos);
  EXPECT_NE(Flags::Parse({"--b=1"}, known, {"b"}).status().message().find("takes no value"), std::string::npos);
  EXPECT_FALSE(Flags::Parse({"stray"}, known, {"b"}).ok());
  auto f = Flags::Parse({"--n", "12x", "--ids", "1,,2"}, known, {"b"});
  ASSERT_TRUE(f.ok());
  EXPECT_NE(f->GetInt("n", 0, 0, 100).status().message().find("--n"), std::string::npos);
  EXPECT_FALSE(f->GetIntList("ids", 0, 10).ok());
  f = Flags::Parse({"--n", "101", "--ids", "1,11"}, known, {"b"});
  EXPECT_NE(f->GetInt("n", 0, 0, 100).status().message().find("outside [0, 100]"), std::string::npos);
  EXPECT_FALSE(f->GetIntList("ids", 0, 10).ok());
}

TEST(FlagsTest, ChoicesNameTheFlagAndTheOptions) {
  auto f = Flags::Parse({"--dtype", "f16"}, {"dtype", "backend"}, {});
  ASSERT_TRUE(f.ok());
  auto bad = f->GetChoice("dtype", "bf16", {"bf16", "f32"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "--dtype: \"f16\" is not one of: bf16, f32");
  EXPECT_EQ(*f->GetChoice("backend", "cpu", {"cpu", "cuda"}), "cpu");
}

}  // namespace
}  // namespace strata::tools
