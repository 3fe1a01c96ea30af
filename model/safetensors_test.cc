#include "model/safetensors.h"

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace strata::model {
namespace {

std::string LengthPrefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

// A file whose header is `json` and whose data section has `data_bytes` bytes.
std::string Forge(const std::string& json, size_t data_bytes) {
  return LengthPrefix(json.size()) + json + std::string(data_bytes, '\x01');
}

TEST(SafetensorsTest, WritesAndReadsBack) {
  InMemoryFileSystem fs;
  std::vector<TensorSpec> specs = {{"a", DType::kF32, {2, 3}}, {"b", DType::kBF16, {5}},
                                   {"empty", DType::kF16, {0, 4}}};
  auto fill = [](const TensorSpec& t, std::string* bytes) {
    for (size_t i = 0; i < bytes->size(); ++i) (*bytes)[i] = static_cast<char>(i + t.name.size());
    return absl::OkStatus();
  };
  ASSERT_TRUE(WriteSafetensors(&fs, "m.safetensors", specs, {{"format", "pt"}}, fill).ok());
  auto file = SafetensorsFile::Open(&fs, "m.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->header().metadata.at("format"), "pt");
  EXPECT_EQ((*file)->header().header_bytes % 8, 0u);
  auto a = (*file)->Find("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->num_bytes, 24u);
  EXPECT_EQ(a->data[5], 6);
  auto b = (*file)->Find("b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->num_bytes, 10u);
  EXPECT_EQ(b->data[0], 1);
  auto e = (*file)->Find("empty");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->num_bytes, 0u);
  EXPECT_EQ((*file)->Find("missing").status().code(), absl::StatusCode::kNotFound);
}

struct BadFile {
  const char* what;
  std::string bytes;
  const char* message;  // must appear in the error
};

TEST(SafetensorsTest, RejectsEveryBrokenRuleWithAClearMessage) {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::string huge_len = LengthPrefix(kMaxSafetensorsHeaderBytes + 1);
  std::string past_end = LengthPrefix(1000) + "{}";
  const BadFile cases[] = {
      {"short file", std::string("\x02\x00\x00", 3), "shorter than the 8-byte"},
      {"header over the cap", huge_len, "exceeds the limit"},
      {"header past the end", past_end, "runs past the end"},
      {"bad utf-8", Forge("{\"\xff\":1}", 0), "UTF-8"},
      {"overlong utf-8", Forge("{\"\xc0\xaf\":1}", 0), "UTF-8"},
      {"not json", Forge("{\"t\":", 0), "not valid JSON"},
      {"not an object", Forge("[1,2]", 0), "must be a JSON object"},
      {"unknown dtype", Forge(R"({"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8), "unknown dtype"},
      {"unsupported dtype", Forge(R"({"t":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8), "not supported"},
      {"negative shape", Forge(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative"},
      {"shape vs bytes", Forge(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "needs 12 bytes"},
      {"reversed offsets", Forge(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8), "reversed"},
      {"hole", Forge(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "hole"},
      {"overlap", Forge("{" + ok_entry + R"(,"u":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "overlap"},
      {"short data", Forge("{" + ok_entry + "}", 4), "holds 4 bytes"},
      {"trailing data", Forge("{" + ok_entry + "}", 12), "holds 12 bytes"},
      {"repeated name", Forge("{" + ok_entry + "," + ok_entry + "}", 8), "repeated"},
      {"missing offsets", Forge(R"({"t":{"dtype":"F32","shape":[2]}})", 8), "data_offsets"},
      {"metadata not strings", Forge(R"({"__metadata__":{"a":1}})", 0), "__metadata__"},
      {"huge shape", Forge(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8), "too large"},
  };
  for (const BadFile& bad : cases) {
    auto h = ParseSafetensors(bad.bytes, "f.safetensors");
    ASSERT_FALSE(h.ok()) << bad.what << " was accepted";
    EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << bad.what;
    EXPECT_NE(h.status().message().find(bad.message), absl::string_view::npos)
        << bad.what << ": " << h.status().message();
    EXPECT_NE(h.status().message().find("f.safetensors"), absl::string_view::npos) << bad.what;
  }
}

TEST(SafetensorsTest, ErrorsNameTheTensor) {
  auto h = ParseSafetensors(
      Forge(R"({"model.norm.weight":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8), "x");
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("model.norm.weight"), absl::string_view::npos);
}

TEST(SafetensorsTest, AcceptsEmptyFileOfTensors) {
  auto h = ParseSafetensors(Forge("{}", 0), "x");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_TRUE(h->tensors.empty());
}

}  // namespace
}  // namespace strata::model
