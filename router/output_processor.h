// One request's output, whatever front end serves it (gRPC Generate and
// Score today; an HTTP API can use the same): turns the dispatcher's events
// into what the client is sent (token ids with logprobs and top-n, text
// deltas, nothing after a stop string), decides the finish reason, and
// records the request's latency metrics at the phase where each happened
// (time to first token, inter-token, queue time, request latency, outcome,
// prompt tokens), vLLM's output processor habit.
//
// Not thread-safe: one front-end thread owns a request's processor.
#ifndef STRATA_ROUTER_OUTPUT_PROCESSOR_H_
#define STRATA_ROUTER_OUTPUT_PROCESSOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "model/tokenizer.h"
#include "router/request_stream.h"
#include "router/router_metrics.h"
#include "router/text_stream.h"

namespace strata::router {

// What goes to the client after one batch of events.
struct OutputChunk {
  std::vector<TokenOut> tokens;  // none after a stop string
  std::string text;              // the text delta (with a tokenizer)
  bool finished = false;
  Finish reason = Finish::kStop;
  std::string error;
  int32_t prompt_tokens = 0, completion_tokens = 0;
  std::vector<float> score;  // Score: the continuation's logprobs
  // A stop string ended the reply before the sequence finished: the front
  // end cancels the sequence so its blocks are freed now.
  bool cancel_sequence = false;

  bool empty() const { return tokens.empty() && text.empty() && !finished; }
};

class OutputProcessor {
 public:
  // `tokenizer` (may be null: token ids only) and `metrics` (may be null)
  // must outlive the processor.
  OutputProcessor(const model::Tokenizer* tokenizer, std::vector<std::string> stop_strings, int32_t prompt_tokens,
                  RouterMetrics* metrics);

  OutputChunk Process(RequestStream::Event event, const RequestStream& stream);
  // The front end ended the request (client cancel, deadline, client gone):
  // counts it under `outcome` (cancelled, deadline).
  void Abandon(const std::string& outcome);

  static const char* OutcomeName(Finish reason);
  // The RPC status a finished request ends with: OK, UNAVAILABLE (no
  // pipeline could finish it) or INTERNAL (a stage failed it).
  static absl::Status FinishStatus(Finish reason, const std::string& error);

 private:
  void RecordTokens(const RequestStream::Event& event);
  void RecordFinish(const RequestStream& stream, Finish reason, RequestStream::Clock::time_point when);

  std::unique_ptr<TextStream> text_;
  int32_t prompt_tokens_;
  RouterMetrics* metrics_;
  int32_t sent_tokens_ = 0;
  bool stopped_by_string_ = false;
  bool done_ = false;
  bool have_token_ = false;
  RequestStream::Clock::time_point last_token_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_OUTPUT_PROCESSOR_H_
