// For tests: a tiktoken tokenizer whose 256 ranks are the single bytes, so
// a test can write text as token ids and back without Llama 3's files.
#ifndef STRATA_ROUTER_BYTE_TOKENIZER_H_
#define STRATA_ROUTER_BYTE_TOKENIZER_H_

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "model/tokenizer.h"

namespace strata::router::testing_util {

inline std::unique_ptr<model::Tokenizer> ByteTokenizer() {
  std::string file;
  static const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (int b = 0; b < 256; ++b) {
    absl::StrAppend(&file, std::string(1, b64[b >> 2]), std::string(1, b64[(b & 3) << 4]), "== ", b, "\n");
  }
  return std::move(*model::Tokenizer::FromTiktoken(file));
}

}  // namespace strata::router::testing_util

#endif  // STRATA_ROUTER_BYTE_TOKENIZER_H_
