// A request's stream of events: the dispatcher's thread fills it (through
// the scheduler's SequenceSink calls) and the front end that owns the
// request drains it. Thread-safe.
#ifndef STRATA_ROUTER_REQUEST_STREAM_H_
#define STRATA_ROUTER_REQUEST_STREAM_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "router/scheduler.h"

namespace strata::router {

class RequestStream : public SequenceSink {
 public:
  using Clock = std::chrono::steady_clock;
  struct Event {
    std::vector<TokenOut> tokens;
    std::vector<Clock::time_point> token_times;  // when each token reached the stream
    bool finished = false;
    Clock::time_point finished_at;
    Finish reason = Finish::kStop;
    int32_t prompt_tokens = 0, completion_tokens = 0;
    std::string error;
    std::vector<float> score;
  };
  void Token(const TokenOut& token) override;
  void Finished(Finish reason, int32_t prompt_tokens, int32_t completion_tokens, const std::string& error,
                const std::vector<float>& score) override;
  // Waits up to `timeout` for events, or until Interrupt; returns what
  // arrived (tokens merged), nothing when interrupted or timed out.
  Event Next(std::chrono::milliseconds timeout);
  // Makes the Next that waits now, or else the next one, return at once
  // (the caller went away: its front end should look). From any thread.
  void Interrupt();
  bool finished() const;

  // Phase times, each taken where its event happens (vLLM's metrics design).
  const Clock::time_point arrival = Clock::now();
  // Set by the dispatcher when the sequence first enters a step.
  void MarkScheduled(Clock::time_point when);
  Clock::time_point first_scheduled() const { return first_step_.load(); }
  // Tokens that reached the stream so far, and when the last one did.
  uint64_t tokens() const { return tokens_.load(); }
  Clock::time_point last_token_at() const { return last_token_.load(); }

 private:
  std::atomic<Clock::time_point> first_step_{Clock::time_point()};
  std::atomic<Clock::time_point> last_token_{Clock::time_point()};
  std::atomic<uint64_t> tokens_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Event pending_;
  bool has_pending_ = false;
  bool interrupted_ = false;
  bool finished_ = false;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_REQUEST_STREAM_H_
