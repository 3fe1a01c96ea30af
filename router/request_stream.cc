#include "router/request_stream.h"

namespace strata::router {

void RequestStream::Token(const TokenOut& token) {
  std::lock_guard<std::mutex> lock(mu_);
  const Clock::time_point now = Clock::now();
  pending_.tokens.push_back(token);
  pending_.token_times.push_back(now);
  last_token_ = now;
  tokens_++;
  has_pending_ = true;
  cv_.notify_all();
}

void RequestStream::Finished(Finish reason, int32_t prompt_tokens, int32_t completion_tokens,
                             const std::string& error, const std::vector<float>& score) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.finished = true;
  pending_.finished_at = Clock::now();
  pending_.reason = reason;
  pending_.prompt_tokens = prompt_tokens;
  pending_.completion_tokens = completion_tokens;
  pending_.error = error;
  pending_.score = score;
  has_pending_ = true;
  finished_ = true;
  cv_.notify_all();
}

RequestStream::Event RequestStream::Next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return has_pending_ || interrupted_; });
  interrupted_ = false;
  Event e = std::move(pending_);
  pending_ = Event();
  has_pending_ = false;
  return e;
}

void RequestStream::Interrupt() {
  std::lock_guard<std::mutex> lock(mu_);
  interrupted_ = true;
  cv_.notify_all();
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

void RequestStream::MarkScheduled(Clock::time_point when) {
  Clock::time_point unset{};
  first_step_.compare_exchange_strong(unset, when);
}

}  // namespace strata::router
