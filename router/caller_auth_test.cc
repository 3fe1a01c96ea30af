#include "router/caller_auth.h"

#include <cstdlib>
#include <fstream>
#include <thread>

#include "gtest/gtest.h"

namespace strata::router {
namespace {

using absl::StatusCode;

std::string Write(const std::string& name, const std::string& text) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

constexpr char kTokens[] = R"({"tokens": [
  {"name": "frontend", "token": "frontend-token-0123", "models": ["llama"], "max_concurrent": 2, "max_priority": 5},
  {"name": "eval", "token_sha256": "SHA", "models": ["*"], "requests_per_second": 2},
  {"name": "other", "token": "other-token-0123456", "models": ["mistral"]}
]})";

std::string TokensFile(const std::string& name) {
  std::string text = kTokens;
  text.replace(text.find("SHA"), 3, Sha256Hex("eval-token-abcdefgh"));
  return Write(name, text);
}

TEST(TokenTableTest, ParsesTokensAndDigests) {
  auto auth = CallerAuth::Load(TokensFile("tokens.json"));
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->Authenticate("Bearer frontend-token-0123").ok());
  EXPECT_TRUE((*auth)->Authenticate("bearer   eval-token-abcdefgh ").ok());  // the digest's token, case and spaces
}

TEST(TokenTableTest, BadFilesNameTheEntryAndField) {
  const struct {
    const char* json;
    const char* error;
  } cases[] = {
      {"not json", "not valid JSON"},
      {R"({"token": []})", "\"tokens\" array"},
      {R"({"tokens": [{"token": "abcdefghijklmnopq", "models": ["*"]}]})", "tokens[0]: \"name\""},
      {R"({"tokens": [{"name": "a", "token": "short", "models": ["*"]}]})", "tokens[0] (\"a\"): \"token\" must have 16"},
      {R"({"tokens": [{"name": "a", "token": "abcdefgh ijklmnopq", "models": ["*"]}]})", "printable ASCII"},
      {R"({"tokens": [{"name": "a", "models": ["*"]}]})", "exactly one of"},
      {R"({"tokens": [{"name": "a", "token_sha256": "xyz", "models": ["*"]}]})", "64 lower-case hex"},
      {R"({"tokens": [{"name": "a", "token": "abcdefghijklmnopq"}]})", "\"models\" must be"},
      {R"({"tokens": [{"name": "a", "token": "abcdefghijklmnopq", "models": ["*"], "max_concurrent": -1}]})",
       "\"max_concurrent\""},
      {R"({"tokens": [{"name": "a", "token": "abcdefghijklmnopq", "models": ["*"], "requests_per_second": "9"}]})",
       "\"requests_per_second\""},
      {R"({"tokens": [{"name": "a", "token": "abcdefghijklmnopq", "models": ["*"], "max_priority": 1.5}]})",
       "\"max_priority\""},
      {R"({"tokens": [{"name": "a", "token": "abcdefghijklmnopq", "models": ["*"]},
                      {"name": "a", "token": "bbcdefghijklmnopq", "models": ["*"]}]})",
       "tokens[1] (\"a\"): another entry has this name"},
      {R"({"tokens": [{"name": "a", "token": "abcdefghijklmnopq", "models": ["*"]},
                      {"name": "b", "token": "abcdefghijklmnopq", "models": ["*"]}]})",
       "tokens[1] (\"b\"): another entry has the same token"},
  };
  for (const auto& c : cases) {
    auto t = TokenTable::Parse(c.json);
    ASSERT_FALSE(t.ok()) << c.json;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find(c.error), std::string::npos) << t.status() << " for " << c.json;
  }
  auto missing = CallerAuth::Load("/nonexistent/tokens.json");
  EXPECT_NE(missing.status().message().find("--auth-tokens: cannot read"), std::string::npos);
}

TEST(CallerAuthTest, AnswersTheCodeOfEachRule) {
  auto auth = *CallerAuth::Load(TokensFile("rules.json"));
  const struct {
    const char* authorization;
    const char* model;
    int priority;
    StatusCode code;
    const char* message;
  } cases[] = {
      {"", "llama", 0, StatusCode::kUnauthenticated, "no bearer token"},
      {"Basic dXNlcjpwYXNz", "llama", 0, StatusCode::kUnauthenticated, "must be 'Bearer <token>'"},
      {"Bearer not-a-known-token-xx", "llama", 0, StatusCode::kUnauthenticated, "not known"},
      {"Bearer frontend-token-0123", "mistral", 0, StatusCode::kPermissionDenied, "may not use model \"mistral\""},
      {"Bearer other-token-0123456", "llama", 0, StatusCode::kPermissionDenied, "token \"other\""},
      {"Bearer frontend-token-0123", "llama", 6, StatusCode::kPermissionDenied, "priority 6 is above"},
      {"Bearer eval-token-abcdefgh", "llama", 1, StatusCode::kPermissionDenied, "(0)"},
      {"Bearer frontend-token-0123", "llama", 5, StatusCode::kOk, ""},
      {"Bearer eval-token-abcdefgh", "anything", 0, StatusCode::kOk, ""},
  };
  for (const auto& c : cases) {
    auto pass = auth->Admit(c.authorization, c.model, c.priority);
    EXPECT_EQ(pass.status().code(), c.code) << c.authorization << " " << c.model << ": " << pass.status();
    if (!pass.ok()) EXPECT_NE(pass.status().message().find(c.message), std::string::npos) << pass.status();
  }
}

TEST(CallerAuthTest, ConcurrencyIsHeldByThePass) {
  auto auth = *CallerAuth::Load(TokensFile("concurrent.json"));
  auto a = auth->Admit("Bearer frontend-token-0123", "llama", 0);
  auto b = auth->Admit("Bearer frontend-token-0123", "llama", 0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->name(), "frontend");
  auto c = auth->Admit("Bearer frontend-token-0123", "llama", 0);
  ASSERT_EQ(c.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(c.status().message().find("2 concurrent requests (max_concurrent)"), std::string::npos) << c.status();
  CallerPass moved = std::move(*a);  // moving does not release
  EXPECT_FALSE(auth->Admit("Bearer frontend-token-0123", "llama", 0).ok());
  moved = CallerPass();  // releasing does
  EXPECT_TRUE(auth->Admit("Bearer frontend-token-0123", "llama", 0).ok());
}

TEST(CallerAuthTest, RequestsPerSecondIsATokenBucket) {
  auto auth = *CallerAuth::Load(TokensFile("rate.json"));
  // A burst of 2 (the rate), then refused until the bucket refills.
  EXPECT_TRUE(auth->Admit("Bearer eval-token-abcdefgh", "llama", 0).ok());
  EXPECT_TRUE(auth->Admit("Bearer eval-token-abcdefgh", "llama", 0).ok());
  auto over = auth->Admit("Bearer eval-token-abcdefgh", "llama", 0);
  ASSERT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("2 requests per second (requests_per_second)"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // 1.2 requests' worth
  EXPECT_TRUE(auth->Admit("Bearer eval-token-abcdefgh", "llama", 0).ok());
}

TEST(CallerAuthTest, ReloadSwapsTokensAndKeepsAdmittedPasses) {
  const std::string path = TokensFile("reload.json");
  auto auth = *CallerAuth::Load(path);
  auto held = auth->Admit("Bearer frontend-token-0123", "llama", 0);
  ASSERT_TRUE(held.ok());
  Write("reload.json", R"({"tokens": [
    {"name": "frontend", "token": "rotated-token-98765", "models": ["llama"], "max_concurrent": 1}]})");
  ASSERT_TRUE(auth->Reload().ok());
  EXPECT_EQ(auth->Authenticate("Bearer frontend-token-0123").code(), StatusCode::kUnauthenticated);
  // The same name keeps its count: the pass admitted before holds the one slot.
  EXPECT_EQ(auth->Admit("Bearer rotated-token-98765", "llama", 0).status().code(), StatusCode::kResourceExhausted);
  *held = CallerPass();
  EXPECT_TRUE(auth->Admit("Bearer rotated-token-98765", "llama", 0).ok());
  // A bad file keeps the current table.
  Write("reload.json", "{broken");
  EXPECT_EQ(auth->Reload().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(auth->Authenticate("Bearer rotated-token-98765").ok());
}

TEST(CallerAuthTest, OffLetsEveryCallPass) {
  CallerAuth off;
  EXPECT_FALSE(off.enabled());
  EXPECT_TRUE(off.Admit("", "anything", 100).ok());
  EXPECT_TRUE(off.Authenticate("").ok());
}

}  // namespace
}  // namespace strata::router
