// Stop strings over streamed text, with a byte-level toy vocabulary: the
// deltas never include a stop string or anything after it, partial matches
// are held and released, and characters split across tokens are whole.
#include "router/text_stream.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "router/byte_tokenizer.h"

namespace strata::router {
namespace {

using testing_util::ByteTokenizer;

std::string Feed(TextStream& ts, const std::string& text, bool* stopped, size_t* consumed) {
  std::string out;
  *stopped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    out += ts.Push(static_cast<uint8_t>(text[i]), stopped);
    if (*stopped) {
      *consumed = i + 1;
      return out;
    }
  }
  *consumed = text.size();
  return out + ts.Finish();
}

TEST(TextStreamTest, StopsBeforeTheStopString) {
  auto tok = ByteTokenizer();
  bool stopped;
  size_t n;
  TextStream a(tok.get(), {"END", "\n\n"});
  EXPECT_EQ(Feed(a, "hello ENDING more", &stopped, &n), "hello ");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(n, 9u);  // stopped at the D
  TextStream b(tok.get(), {"END"});
  EXPECT_EQ(Feed(b, "an EN, then E", &stopped, &n), "an EN, then E");  // partial matches released
  EXPECT_FALSE(stopped);
  TextStream c(tok.get(), {"\n\n"});
  EXPECT_EQ(Feed(c, "line\nline\n\nrest", &stopped, &n), "line\nline");
  TextStream d(tok.get(), {});
  EXPECT_EQ(Feed(d, "caf\xc3\xa9 \xf0\x9f\xa6\x99", &stopped, &n), "caf\xc3\xa9 \xf0\x9f\xa6\x99");
  TextStream e(tok.get(), {"\xc3\xa9!"});  // a stop string with a two-byte character
  EXPECT_EQ(Feed(e, "caf\xc3\xa9? caf\xc3\xa9!", &stopped, &n), "caf\xc3\xa9? caf");
  EXPECT_TRUE(stopped);
}

TEST(TextStreamTest, HeldTextComesOutAtTheEnd) {
  auto tok = ByteTokenizer();
  TextStream ts(tok.get(), {"STOP"});
  bool stopped;
  EXPECT_EQ(ts.Push('a', &stopped), "a");
  EXPECT_EQ(ts.Push('S', &stopped), "");
  EXPECT_EQ(ts.Push('T', &stopped), "");
  EXPECT_EQ(ts.Finish(), "ST");
}

}  // namespace
}  // namespace strata::router
