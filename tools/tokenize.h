// strata tokenize / detokenize: the Llama 3 tokenizer from the command line.
#ifndef STRATA_TOOLS_TOKENIZE_H_
#define STRATA_TOOLS_TOKENIZE_H_

#include "absl/status/status.h"
#include "base/flags.h"

namespace strata::tools {

// --model DIR (--text T | --file F) [--chat] [--special] [--json]
const base::FlagTable& TokenizeFlags();
absl::Status Tokenize(const base::ParsedFlags& flags);

// --model DIR --ids 1,2,3 [--json]
const base::FlagTable& DetokenizeFlags();
absl::Status Detokenize(const base::ParsedFlags& flags);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_TOKENIZE_H_
