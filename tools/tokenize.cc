#include "tools/tokenize.h"

#include <iostream>

#include "absl/strings/str_join.h"
#include "model/file_system.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "base/status_macros.h"
#include "tools/flags.h"

namespace strata::tools {

absl::Status Tokenize(const std::vector<std::string>& args) {
  STRATA_ASSIGN_OR_RETURN(Flags f, Flags::Parse(args, {"model", "text", "file", "chat", "special", "json"},
                                                {"chat", "special", "json"}));
  if (!f.Has("model")) return absl::InvalidArgumentError("--model DIR is required (a folder with tokenizer.json or tokenizer.model)");
  if (f.Has("text") == f.Has("file")) return absl::InvalidArgumentError("give exactly one of --text and --file");
  std::string text = f.GetString("text", "");
  if (f.Has("file")) {
    STRATA_ASSIGN_OR_RETURN(text, model::PosixFileSystem()->ReadFile(f.GetString("file", ""), 256ull << 20));
  }
  STRATA_ASSIGN_OR_RETURN(auto tok, model::Tokenizer::Load(model::PosixFileSystem(), f.GetString("model", "")));
  std::vector<int32_t> ids;
  if (f.GetBool("chat")) {
    STRATA_ASSIGN_OR_RETURN(ids, model::ApplyChatTemplate(*tok, {{"user", text}}));
  } else if (f.GetBool("special")) {
    STRATA_ASSIGN_OR_RETURN(ids, tok->EncodeWithSpecialTokens(text));
  } else {
    STRATA_ASSIGN_OR_RETURN(ids, tok->Encode(text));
  }
  if (f.GetBool("json")) {
    std::cout << nlohmann::json({{"ids", ids}}).dump() << std::endl;
  } else {
    std::cout << absl::StrJoin(ids, ",") << std::endl;
  }
  return absl::OkStatus();
}

absl::Status Detokenize(const std::vector<std::string>& args) {
  STRATA_ASSIGN_OR_RETURN(Flags f, Flags::Parse(args, {"model", "ids", "json"}, {"json"}));
  if (!f.Has("model")) return absl::InvalidArgumentError("--model DIR is required");
  if (!f.Has("ids")) return absl::InvalidArgumentError("--ids 1,2,3 is required");
  STRATA_ASSIGN_OR_RETURN(std::vector<int64_t> ids64, f.GetIntList("ids", 0, INT32_MAX));
  STRATA_ASSIGN_OR_RETURN(auto tok, model::Tokenizer::Load(model::PosixFileSystem(), f.GetString("model", "")));
  std::vector<int32_t> ids(ids64.begin(), ids64.end());
  // Through the streaming decoder, so partial characters print as U+FFFD
  // rather than as broken bytes.
  STRATA_ASSIGN_OR_RETURN(std::string text, model::DecodeToText(*tok, ids));
  if (f.GetBool("json")) {
    std::cout << nlohmann::json({{"text", text}}).dump() << std::endl;
  } else {
    std::cout << text << std::endl;
  }
  return absl::OkStatus();
}

}  // namespace strata::tools
