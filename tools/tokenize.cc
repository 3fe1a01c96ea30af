#include "tools/tokenize.h"

#include <iostream>

#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "model/file_system.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace strata::tools {
namespace {

base::Flag TokenizerModelFlag() {
  return base::StringFlag("model", std::nullopt, "DIR", "a folder with tokenizer.json or tokenizer.model").Required();
}

}  // namespace

const base::FlagTable& TokenizeFlags() {
  static const base::FlagTable* table = new base::FlagTable(
      "strata tokenize --model DIR (--text T | --file F) [flags]", "Llama 3 token ids of a text.",
      {{"tokenize",
        {TokenizerModelFlag(), base::StringFlag("text", std::nullopt, "TEXT", "the text"),
         base::StringFlag("file", std::nullopt, "FILE", "a file holding the text"),
         base::BoolFlag("chat", false, "as a user turn of the Llama 3.1 chat format"),
         base::BoolFlag("special", false, "special-token strings become their ids"),
         base::BoolFlag("json", false, "print {\"ids\": [...]}")}}});
  return *table;
}

absl::Status Tokenize(const base::ParsedFlags& f) {
  if (f.IsSet("text") == f.IsSet("file")) return absl::InvalidArgumentError("give exactly one of --text and --file");
  std::string text = f.String("text");
  if (f.IsSet("file")) {
    STRATA_ASSIGN_OR_RETURN(text, model::PosixFileSystem()->ReadFile(f.String("file"), 256ull << 20));
  }
  STRATA_ASSIGN_OR_RETURN(auto tok, model::Tokenizer::Load(model::PosixFileSystem(), f.String("model")));
  std::vector<int32_t> ids;
  if (f.Bool("chat")) {
    STRATA_ASSIGN_OR_RETURN(ids, model::ApplyChatTemplate(*tok, {{"user", text}}));
  } else if (f.Bool("special")) {
    STRATA_ASSIGN_OR_RETURN(ids, tok->EncodeWithSpecialTokens(text));
  } else {
    STRATA_ASSIGN_OR_RETURN(ids, tok->Encode(text));
  }
  if (f.Bool("json")) {
    std::cout << nlohmann::json({{"ids", ids}}).dump() << std::endl;
  } else {
    std::cout << absl::StrJoin(ids, ",") << std::endl;
  }
  return absl::OkStatus();
}

const base::FlagTable& DetokenizeFlags() {
  static const base::FlagTable* table = new base::FlagTable(
      "strata detokenize --model DIR --ids 1,2,3 [flags]", "The text of Llama 3 token ids.",
      {{"detokenize",
        {TokenizerModelFlag(), base::IntListFlag("ids", std::nullopt, 0, INT32_MAX, "the token ids").Required(),
         base::BoolFlag("json", false, "print {\"text\": ...}")}}});
  return *table;
}

absl::Status Detokenize(const base::ParsedFlags& f) {
  const std::vector<int64_t>& ids64 = f.IntList("ids");
  STRATA_ASSIGN_OR_RETURN(auto tok, model::Tokenizer::Load(model::PosixFileSystem(), f.String("model")));
  std::vector<int32_t> ids(ids64.begin(), ids64.end());
  // Through the streaming decoder, so partial characters print as U+FFFD
  // rather than as broken bytes.
  STRATA_ASSIGN_OR_RETURN(std::string text, model::DecodeToText(*tok, ids));
  if (f.Bool("json")) {
    std::cout << nlohmann::json({{"text", text}}).dump() << std::endl;
  } else {
    std::cout << text << std::endl;
  }
  return absl::OkStatus();
}

}  // namespace strata::tools
