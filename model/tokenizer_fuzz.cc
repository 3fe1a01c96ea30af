// libFuzzer target for the tokenizer: any bytes are refused (invalid UTF-8)
// or encode to ids that decode back to exactly those bytes, directly and
// through the incremental decoder, with and without special tokens; never a
// crash. The tokenizer comes from STRATA_TOKENIZER_DIR (tools/fuzz.sh).
#include <cstdlib>
#include <cstdio>
#include <memory>

#include "model/tokenizer.h"

namespace {
std::unique_ptr<strata::model::Tokenizer> tokenizer;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("STRATA_TOKENIZER_DIR");
  auto t = strata::model::Tokenizer::Load(strata::model::PosixFileSystem(), dir ? dir : ".");
  if (!t.ok()) {
    std::fprintf(stderr, "tokenizer_fuzz: %s\n", std::string(t.status().message()).c_str());
    std::abort();
  }
  tokenizer = std::move(*t);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (bool special : {false, true}) {
    auto ids = special ? tokenizer->EncodeWithSpecialTokens(text) : tokenizer->Encode(text);
    if (!ids.ok()) {
      if (strata::model::ValidUtf8Prefix(text) == text.size()) __builtin_trap();  // valid text was refused
      return 0;
    }
    auto back = tokenizer->Decode(*ids);
    if (!back.ok() || *back != text) __builtin_trap();
    strata::model::IncrementalDecoder dec(tokenizer.get());
    std::string streamed;
    for (int32_t id : *ids) streamed += *dec.Push(id);
    streamed += dec.Flush();
    if (streamed != text) __builtin_trap();
  }
  return 0;
}
