#include "base/flags.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/flag_groups.h"
#include "gtest/gtest.h"

namespace strata::base {
namespace {

FlagTable TestTable() {
  return FlagTable("test [flags]", "a table for tests",
                   {{"flags",
                     {StringFlag("model", std::nullopt, "DIR", "a model folder").Required(),
                      StringFlag("name", "llama", "NAME", "a label"),
                      IntFlag("n", 7, 0, 100, "a count"),
                      IntFlag("hidden", std::nullopt, 2, 64, "no default"),
                      DoubleFlag("temperature", 0.5, "a number", 0, 2),
                      BoolFlag("json", false, "a switch"),
                      BoolFlag("checks", true, "on unless told"),
                      ChoiceFlag("dtype", "bf16", {"bf16", "f32"}, "a choice"),
                      AddressFlag("router", "an address"),
                      IntListFlag("ids", "1,2", 0, 10, "a list")}},
                    BackendFlags()});
}

std::string Error(const std::vector<std::string>& args) {
  absl::StatusOr<ParsedFlags> f = TestTable().Parse(args);
  if (f.ok()) return "ok";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(f.status().message());
}

std::string WriteFile(const std::string& name, const std::string& text) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs(text.c_str(), f);
  std::fclose(f);
  return path;
}

TEST(FlagsTest, DefaultsWhenNothingIsGiven) {
  auto f = TestTable().Parse({"--model", "m"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->IsSet("model"));
  EXPECT_FALSE(f->IsSet("n"));
  EXPECT_EQ(f->Int("n"), 7);
  EXPECT_EQ(f->String("name"), "llama");
  EXPECT_FALSE(f->HasValue("hidden"));
  EXPECT_FALSE(f->HasValue("router"));
  EXPECT_EQ(f->String("router"), "");
  EXPECT_DOUBLE_EQ(f->Double("temperature"), 0.5);
  EXPECT_FALSE(f->Bool("json"));
  EXPECT_TRUE(f->Bool("checks"));
  EXPECT_EQ(f->String("dtype"), "bf16");
  EXPECT_EQ(f->IntList("ids"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(f->String("backend"), "cpu");
  EXPECT_EQ(f->Int("threads"), 1);
}

// Each spelling, and the value it gives.
TEST(FlagsTest, Spellings) {
  struct Case {
    std::vector<std::string> args;
    std::string flag, want;
  } cases[] = {
      {{"--n", "5"}, "n", "5"},
      {{"--n=5"}, "n", "5"},
      {{"--n", "5", "--n", "6"}, "n", "6"},  // the last one wins
      {{"--json"}, "json", "true"},
      {{"--json", "--n", "1"}, "json", "true"},
      {{"--json=false"}, "json", "false"},
      {{"--checks", "false"}, "checks", "false"},
      {{"--checks=true"}, "checks", "true"},
      {{"--temperature", "1.25"}, "temperature", "1.25"},
      {{"--ids", "3,0,10"}, "ids", "3,0,10"},
      {{"--router", "10.0.0.1:50051"}, "router", "10.0.0.1:50051"},
      {{"--name="}, "name", ""},
      {{"--isa", "avx2"}, "isa", "avx2"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = c.args;
    args.insert(args.begin(), {"--model", "m"});
    auto f = TestTable().Parse(args);
    ASSERT_TRUE(f.ok()) << c.args[0] << ": " << f.status();
    EXPECT_TRUE(f->IsSet(c.flag)) << c.args[0];
    std::vector<std::string> passed;
    const FlagTable table = TestTable();
    for (const FlagGroup& g : table.groups()) {
      for (const std::string& a : f->ArgsFor(g)) passed.push_back(a);
    }
    EXPECT_NE(std::find(passed.begin(), passed.end(), absl::StrCat("--", c.flag, "=", c.want)), passed.end())
        << c.args[0];
  }
}

// Every refusal names the flag and, where there is one, the value.
TEST(FlagsTest, BadValuesNameTheFlagAndTheValue) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{}, "--model is required (a model folder)"},
      {{"--model"}, "--model needs a value"},
      {{"--model", "m", "--zzz", "1"}, "unknown flag --zzz"},
      {{"--model", "m", "stray"}, "unexpected argument \"stray\""},
      {{"--model", "m", "-n", "1"}, "unexpected argument \"-n\""},
      {{"--model", "m", "--n", "12x"}, "--n: \"12x\" is not an integer"},
      {{"--model", "m", "--n", "101"}, "--n: 101 is outside [0, 100]"},
      {{"--model", "m", "--n=-1"}, "--n: -1 is outside [0, 100]"},
      {{"--model", "m", "--hidden", "1"}, "--hidden: 1 is outside [2, 64]"},
      {{"--model", "m", "--temperature", "warm"}, "--temperature: \"warm\" is not a number"},
      {{"--model", "m", "--temperature", "3"}, "--temperature: 3 is outside [0, 2]"},
      {{"--model", "m", "--json=1"}, "--json: \"1\" is not true or false"},
      {{"--model", "m", "--checks", "maybe"}, "--checks: \"maybe\" is not true or false"},
      {{"--model", "m", "--dtype", "f16"}, "--dtype: \"f16\" is not one of: bf16, f32"},
      {{"--model", "m", "--router", "nohost"}, "--router: \"nohost\" is not HOST:PORT with a port in [0, 65535]"},
      {{"--model", "m", "--router", "h:70000"}, "--router: \"h:70000\" is not HOST:PORT with a port in [0, 65535]"},
      {{"--model", "m", "--router", ":80"}, "--router: \":80\" is not HOST:PORT with a port in [0, 65535]"},
      {{"--model", "m", "--ids", "1,,2"}, "--ids: \"\" is not an integer"},
      {{"--model", "m", "--ids", "1,11"}, "--ids: 11 is outside [0, 10]"},
      {{"--model", "m", "--backend", "tpu"}, "--backend: \"tpu\" is not one of: cpu, reference, cuda"},
      {{"--model", "m", "--threads", "0"}, "--threads: 0 is outside [1, 1024]"},
      {{"--model", "m", "--config", "/nonexistent.json"}, "--config: cannot read /nonexistent.json"},
  };
  for (const Case& c : cases) EXPECT_EQ(Error(c.args), c.message);
}

TEST(FlagsTest, ConfigFileUnderTheCommandLine) {
  const std::string path = WriteFile("flags.json", R"({"model": "/models/a", "n": 9, "json": true,
      "temperature": 1.5, "ids": [4, 5], "dtype": "f32", "threads": 4})");
  auto f = TestTable().Parse({"--config", path, "--threads", "2"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->String("model"), "/models/a");
  EXPECT_TRUE(f->IsSet("n"));
  EXPECT_EQ(f->Int("n"), 9);
  EXPECT_TRUE(f->Bool("json"));
  EXPECT_DOUBLE_EQ(f->Double("temperature"), 1.5);
  EXPECT_EQ(f->IntList("ids"), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(f->String("dtype"), "f32");
  EXPECT_EQ(f->Int("threads"), 2);  // the command line wins
}

TEST(FlagsTest, ConfigFileErrorsNameTheFileAndTheKey) {
  struct Case {
    std::string text, message;  // the message after the file's path
  } cases[] = {
      {R"({"model": "m", "colour": "blue"})", ": unknown key \"colour\""},
      {R"({"model": "m", "config": "x.json"})", ": unknown key \"config\""},
      {"not json", " is not a JSON object"},
      {"[1, 2]", " is not a JSON object"},
  };
  for (const Case& c : cases) {
    const std::string path = WriteFile("bad.json", c.text);
    EXPECT_EQ(Error({"--config", path}), absl::StrCat("--config: ", path, c.message));
  }
  const std::string path = WriteFile("types.json", R"({"model": "m", "n": 500})");
  EXPECT_EQ(Error({"--config", path}), absl::StrCat("--n: 500 is outside [0, 100] (in ", path, ")"));
  const std::string nested = WriteFile("nested.json", R"({"model": {"a": 1}})");
  EXPECT_EQ(Error({"--config", nested}),
            absl::StrCat("--model: must be a string, number, boolean or list of integers (in ", nested, ")"));
}

TEST(FlagsTest, ArgsForPassesOnOnlyWhatWasSet) {
  auto f = TestTable().Parse({"--model", "m", "--threads", "3", "--isa=avx2"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->ArgsFor(BackendFlags()), (std::vector<std::string>{"--threads=3", "--isa=avx2"}));
  auto plain = TestTable().Parse({"--model", "m"});
  EXPECT_TRUE(plain->ArgsFor(BackendFlags()).empty());
}

TEST(FlagsTest, HelpShowsEveryFlagWithItsTypeRangeAndDefault) {
  const std::string help = TestTable().Help();
  for (const char* want : {"usage: test [flags]", "a table for tests", "\nflags:\n", "\nbackend:\n",
                           "--model DIR", "a model folder; required", "--n N", "a count; in [0, 100], default 7",
                           "--json[=true|false]", "--checks[=true|false]", "on unless told; default true",
                           "--dtype bf16|f32", "--router HOST:PORT", "--ids N,...", "--temperature X",
                           "a number; in [0, 2], default 0.5", "--backend cpu|reference|cuda", "--config FILE.json",
                           "--help"}) {
    EXPECT_NE(help.find(want), std::string::npos) << want << " not in:\n" << help;
  }
}

TEST(FlagsTest, WantsHelp) {
  EXPECT_TRUE(WantsHelp({"--model", "m", "--help"}));
  EXPECT_TRUE(WantsHelp({"-h"}));
  EXPECT_FALSE(WantsHelp({"--model", "help"}));
}

TEST(FlagsDeathTest, TheTableIsChecked) {
  EXPECT_DEATH(FlagTable("t", "", {{"a", {IntFlag("n", 1, 0, 9, "")}}, {"b", {IntFlag("n", 1, 0, 9, "")}}}),
               "--n is declared twice");
  EXPECT_DEATH(FlagTable("t", "", {{"a", {IntFlag("n", 10, 0, 9, "")}}}), "10 is outside");
  EXPECT_DEATH(FlagTable("t", "", {{"a", {StringFlag("config", std::nullopt, "F", "")}}}), "declared twice");
  auto f = TestTable().Parse({"--model", "m"});
  ASSERT_TRUE(f.ok());
  EXPECT_DEATH(f->Int("undeclared"), "not declared");
  EXPECT_DEATH(f->Int("model"), "another type");
  EXPECT_DEATH(f->Int("hidden"), "no value");
}

}  // namespace
}  // namespace strata::base
