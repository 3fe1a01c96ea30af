#include "router/output_processor.h"

namespace strata::router {

using Clock = RequestStream::Clock;

OutputProcessor::OutputProcessor(const model::Tokenizer* tokenizer, std::vector<std::string> stop_strings,
                                 int32_t prompt_tokens, RouterMetrics* metrics)
    : prompt_tokens_(prompt_tokens), metrics_(metrics) {
  if (tokenizer) text_ = std::make_unique<TextStream>(tokenizer, std::move(stop_strings));
}

const char* OutputProcessor::OutcomeName(Finish f) {
  switch (f) {
    case Finish::kStop:
      return "stop";
    case Finish::kLength:
      return "length";
    case Finish::kCancelled:
      return "cancelled";
    case Finish::kError:
      return "error";
    case Finish::kUnavailable:
      return "unavailable";
  }
  return "error";
}

absl::Status OutputProcessor::FinishStatus(Finish reason, const std::string& error) {
  if (reason == Finish::kUnavailable) return absl::UnavailableError(error);
  if (reason == Finish::kError) return absl::InternalError(error);
  return absl::OkStatus();
}

void OutputProcessor::RecordTokens(const RequestStream::Event& e) {
  if (!metrics_) return;
  for (size_t i = 0; i < e.tokens.size(); ++i) {
    const Clock::time_point at = i < e.token_times.size() ? e.token_times[i] : Clock::now();
    if (!have_token_) {
      have_token_ = true;
    } else {
      metrics_->inter_token->Observe(std::chrono::duration<double>(at - last_token_).count());
    }
    last_token_ = at;
  }
}

void OutputProcessor::RecordFinish(const RequestStream& stream, Finish reason, Clock::time_point when) {
  done_ = true;
  if (!metrics_) return;
  const Clock::time_point scheduled = stream.first_scheduled();
  if (scheduled != Clock::time_point()) {
    metrics_->queue_time->Observe(std::chrono::duration<double>(scheduled - stream.arrival).count());
  }
  metrics_->request_latency->Observe(std::chrono::duration<double>(when - stream.arrival).count());
  metrics_->Requests(OutcomeName(reason)).Increment();
  metrics_->prompt_tokens->Increment(prompt_tokens_);
}

OutputChunk OutputProcessor::Process(RequestStream::Event e, const RequestStream& stream) {
  OutputChunk out;
  if (done_) return out;
  if (metrics_ && !have_token_ && !e.tokens.empty()) {
    const Clock::time_point first = e.token_times.empty() ? Clock::now() : e.token_times.front();
    metrics_->ttft->Observe(std::chrono::duration<double>(first - stream.arrival).count());
  }
  RecordTokens(e);
  for (const TokenOut& t : e.tokens) {
    if (stopped_by_string_) break;  // nothing after a stop string is sent
    if (text_) {
      bool stopped = false;
      out.text += text_->Push(t.id, &stopped);
      if (stopped) stopped_by_string_ = true;
    }
    ++sent_tokens_;
    out.tokens.push_back(t);
  }
  if (stopped_by_string_) {
    // The reply ends at the stop string.
    out.cancel_sequence = !e.finished;
    out.finished = true;
    out.reason = Finish::kStop;
    out.completion_tokens = sent_tokens_;
  } else if (e.finished) {
    out.finished = true;
    out.reason = e.reason;
    out.error = e.error;
    out.completion_tokens = e.completion_tokens;
    out.score = std::move(e.score);
    if (text_ && e.reason != Finish::kError && e.reason != Finish::kUnavailable) out.text += text_->Finish();
  }
  if (out.finished) {
    out.prompt_tokens = prompt_tokens_;
    RecordFinish(stream, out.reason, e.finished ? e.finished_at : Clock::now());
  }
  return out;
}

void OutputProcessor::Abandon(const std::string& outcome) {
  if (done_) return;
  done_ = true;
  if (metrics_) metrics_->Requests(outcome).Increment();
}

}  // namespace strata::router
