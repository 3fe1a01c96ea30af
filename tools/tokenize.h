// strata tokenize / detokenize: the Llama 3 tokenizer from the command line.
#ifndef STRATA_TOOLS_TOKENIZE_H_
#define STRATA_TOOLS_TOKENIZE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strata::tools {

// --model DIR (--text T | --file F) [--chat] [--special] [--json]
absl::Status Tokenize(const std::vector<std::string>& args);
// --model DIR --ids 1,2,3 [--json]
absl::Status Detokenize(const std::vector<std::string>& args);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_TOKENIZE_H_
