// The text side of a Generate stream: detokenizes token by token and
// watches for stop strings. Text that could still be the start of a stop
// string is held back, so nothing past a stop string is ever sent and the
// deltas concatenate to the reply's text.
#ifndef STRATA_ROUTER_TEXT_STREAM_H_
#define STRATA_ROUTER_TEXT_STREAM_H_

#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace strata::router {

class TextStream {
 public:
  TextStream(const model::Tokenizer* tokenizer, std::vector<std::string> stop_strings)
      : decoder_(tokenizer), stops_(std::move(stop_strings)) {}

  // The text that can be sent after token `id`. When it completes a stop
  // string, *stopped is set and the text before the stop string is the last
  // delta.
  std::string Push(int32_t id, bool* stopped);
  // What is held at the end of the stream.
  std::string Finish();

 private:
  model::IncrementalDecoder decoder_;
  std::vector<std::string> stops_;
  std::string held_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_TEXT_STREAM_H_
