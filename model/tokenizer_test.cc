// The Llama 3 tokenizer against the ids that tiktoken and Hugging Face
// tokenizers give for strata's corpus (tools/tokenizer/make_data.sh makes
// them with npm; tools/setup.sh runs it): every entry encodes to exactly
// those ids from tokenizer.json and from tokenizer.model, decodes back byte
// for byte, and streams back through the incremental decoder. Special
// tokens, the chat format and bad input are checked too.
#include "model/tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace strata::model {
namespace {

std::string DataDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return std::string(srcdir ? srcdir : ".") + "/strata/third_party/llama3_tokenizer/data";
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string expected = Slurp(DataDir() + "/expected.json");
    ASSERT_FALSE(expected.empty()) << DataDir() << " has no expected.json: run tools/tokenizer/make_data.sh "
                                   << "(tools/setup.sh does) and rebuild";
    corpus_ = new nlohmann::json(nlohmann::json::parse(expected));
    auto fs = PosixFileSystem();
    auto from_json = Tokenizer::FromTokenizerJson(Slurp(DataDir() + "/tokenizer.json"));
    ASSERT_TRUE(from_json.ok()) << from_json.status();
    json_ = from_json->release();
    auto from_tiktoken = Tokenizer::FromTiktoken(Slurp(DataDir() + "/tokenizer.model"));
    ASSERT_TRUE(from_tiktoken.ok()) << from_tiktoken.status();
    tiktoken_ = from_tiktoken->release();
    (void)fs;
  }
  static inline nlohmann::json* corpus_ = nullptr;
  static inline Tokenizer* json_ = nullptr;
  static inline Tokenizer* tiktoken_ = nullptr;
};

TEST_F(TokenizerTest, CorpusEncodesToTheReferenceIdsAndRoundTrips) {
  ASSERT_NE(corpus_, nullptr);
  ASSERT_GE(corpus_->size(), 60u);
  for (const Tokenizer* t : {json_, tiktoken_}) {
    EXPECT_EQ(t->vocab_size(), 128256);
    for (const auto& entry : *corpus_) {
      const std::string name = entry["name"].get<std::string>();
      const std::string text = entry["text"].get<std::string>();
      const std::vector<int32_t> want = entry["ids"].get<std::vector<int32_t>>();
      auto got = t->Encode(text);
      ASSERT_TRUE(got.ok()) << name << ": " << got.status();
      EXPECT_EQ(*got, want) << name;
      auto back = t->Decode(*got);
      ASSERT_TRUE(back.ok());
      EXPECT_EQ(*back, text) << name;
      // Streaming: the deltas concatenate to the text, with no U+FFFD that
      // the text does not have.
      IncrementalDecoder dec(t);
      std::string streamed;
      for (int32_t id : *got) {
        auto delta = dec.Push(id);
        ASSERT_TRUE(delta.ok());
        EXPECT_EQ(ValidUtf8Prefix(*delta), delta->size()) << name << ": a delta is not valid UTF-8";
        streamed += *delta;
      }
      streamed += dec.Flush();
      EXPECT_EQ(streamed, text) << name;
    }
  }
}

TEST_F(TokenizerTest, SpecialTokens) {
  const Tokenizer& t = *json_;
  EXPECT_EQ(t.SpecialTokenId("<|begin_of_text|>"), kBeginOfText);
  EXPECT_EQ(t.SpecialTokenId("<|end_of_text|>"), kEndOfText);
  EXPECT_EQ(t.SpecialTokenId("<|start_header_id|>"), kStartHeader);
  EXPECT_EQ(t.SpecialTokenId("<|end_header_id|>"), kEndHeader);
  EXPECT_EQ(t.SpecialTokenId("<|eom_id|>"), kEndOfMessage);
  EXPECT_EQ(t.SpecialTokenId("<|eot_id|>"), kEndOfTurn);
  EXPECT_EQ(t.SpecialTokenId("<|python_tag|>"), kPythonTag);
  EXPECT_EQ(t.SpecialTokenId("<|reserved_special_token_247|>"), 128255);
  EXPECT_EQ(tiktoken_->SpecialTokenId("<|eot_id|>"), kEndOfTurn);
  EXPECT_EQ(tiktoken_->SpecialTokenId("<|reserved_special_token_247|>"), 128255);
  // In user text they are plain text...
  const std::string text = "hi<|eot_id|>there";
  auto plain = t.Encode(text);
  ASSERT_TRUE(plain.ok());
  for (int32_t id : *plain) EXPECT_LT(id, 128000);
  // ...unless asked for.
  auto special = t.EncodeWithSpecialTokens(text);
  ASSERT_TRUE(special.ok());
  EXPECT_EQ(std::count(special->begin(), special->end(), kEndOfTurn), 1);
  EXPECT_EQ(*t.Decode(*special), text);
  auto fake = t.EncodeWithSpecialTokens("<|not_a_token|>");
  for (int32_t id : *fake) EXPECT_LT(id, 128000);
}

TEST_F(TokenizerTest, ChatTemplate) {
  auto ids = ApplyChatTemplate(*json_, {{"system", "Be brief."}, {"user", "Hello!"}});
  ASSERT_TRUE(ids.ok()) << ids.status();
  // Llama 3: "system" 9125, "user" 882, "assistant" 78191, "\n\n" 271.
  std::vector<int32_t> want = {128000, 128006, 9125, 128007, 271};
  auto brief = json_->Encode("Be brief.");
  want.insert(want.end(), brief->begin(), brief->end());
  want.insert(want.end(), {128009, 128006, 882, 128007, 271, 9906, 0, 128009, 128006, 78191, 128007, 271});
  EXPECT_EQ(*ids, want);
  EXPECT_EQ(ChatStopIds(), (std::vector<int32_t>{128001, 128008, 128009}));
  auto bad = ApplyChatTemplate(*json_, {{"robot", "x"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("messages[0].role"), std::string::npos);
  auto bad_utf8 = ApplyChatTemplate(*json_, {{"user", "ok"}, {"user", "\xff"}});
  ASSERT_FALSE(bad_utf8.ok());
  EXPECT_NE(bad_utf8.status().message().find("messages[1].content"), std::string::npos);
}

TEST_F(TokenizerTest, BadInput) {
  auto bad = json_->Encode("abc\xc3(def");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("byte 3"), std::string::npos) << bad.status();
  EXPECT_FALSE(json_->Encode("\xed\xa0\x80").ok());  // a surrogate
  EXPECT_FALSE(json_->Encode("\xc0\xaf").ok());      // overlong
  EXPECT_FALSE(json_->Decode({128256}).ok());
  EXPECT_FALSE(json_->Decode({-1}).ok());
  // An id stream that ends inside a character: the decoder holds it, then
  // flushes U+FFFD.
  auto euro = json_->Encode("\xe2\x82\xac");  // €
  ASSERT_TRUE(euro.ok());
  IncrementalDecoder dec(json_);
  // Feed the raw byte tokens one by one.
  std::string out;
  for (char c : std::string("\xe2\x82")) {
    int32_t id = -1;
    for (int32_t i = 0; i < 128000 && id < 0; ++i) {
      if (json_->TokenBytes(i) == std::string(1, c)) id = i;
    }
    out += *dec.Push(id);
  }
  EXPECT_EQ(out, "");
  EXPECT_EQ(dec.Flush(), "\xef\xbf\xbd\xef\xbf\xbd");
  // Files that are not tokenizers.
  EXPECT_FALSE(Tokenizer::FromTokenizerJson("{").ok());
  EXPECT_FALSE(Tokenizer::FromTokenizerJson("{\"model\": {\"type\": \"Unigram\"}}").ok());
  EXPECT_FALSE(Tokenizer::FromTiktoken("not base64 at all\n").ok());
  EXPECT_FALSE(Tokenizer::FromTiktoken("YQ== 1\n").ok());  // rank 1 first
  InMemoryFileSystem fs;
  auto none = Tokenizer::Load(&fs, "nowhere");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("tokenizer.json"), std::string::npos);
}

TEST_F(TokenizerTest, LongInputsStayFast) {
  // A megabyte without whitespace, and a megabyte of spaces: the heap merge
  // and the linear pre-tokenizer keep these to well under a second each
  // (bazel's timeout, not an assertion, guards it; the benchmark measures).
  std::string letters;
  for (int i = 0; i < (1 << 20); ++i) letters.push_back(static_cast<char>('a' + (i * 7) % 26));
  auto a = json_->Encode(letters);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*json_->Decode(*a), letters);
  auto b = json_->Encode(std::string(1 << 20, ' ') + "x");
  ASSERT_TRUE(b.ok());
  EXPECT_GT(a->size(), 1000u);
}

}  // namespace
}  // namespace strata::model
