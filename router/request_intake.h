// What every front end (gRPC, the OpenAI-compatible HTTP API) does with a
// request before and while it runs, so there is one code path: check it
// against the served model and the router's limits, tokenize its prompt,
// admit it (a replica is up, the queue has room), submit it to the
// dispatcher, then take its output through an OutputProcessor until it
// ends, is cancelled, or its deadline passes.
//
// Statuses use gRPC's codes: INVALID_ARGUMENT naming the field,
// UNAVAILABLE (no replica), RESOURCE_EXHAUSTED (the queue is full),
// DEADLINE_EXCEEDED, CANCELLED. Thread-safe (RequestIntake); a
// RunningRequest belongs to one front-end thread.
#ifndef STRATA_ROUTER_REQUEST_INTAKE_H_
#define STRATA_ROUTER_REQUEST_INTAKE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tokenizer.h"
#include "router/caller_auth.h"
#include "router/dispatcher.h"
#include "router/gone_watch.h"
#include "router/output_processor.h"
#include "router/router_metrics.h"
#include "router/validation.h"
#include "strata/v1/inference.pb.h"

namespace strata::router {

// A request on its way: submitted, with the processor of its output.
class RunningRequest {
 public:
  using Clock = std::chrono::steady_clock;
  // `pass` holds the caller's token's concurrency for as long as the request
  // runs. With `watch` and `gone` (the caller went away or its deadline
  // passed; asked on the watch's thread), a Next that waits returns as soon
  // as the watch sees `gone`, so the front end can wait long and still end
  // the request within the watch's period.
  RunningRequest(Dispatcher* dispatcher, OutputProcessor output, SequenceSpec spec, CallerPass pass = {},
                 GoneWatch* watch = nullptr, std::function<bool()> gone = {});
  ~RunningRequest();  // ends the sequence if it still runs
  RunningRequest(const RunningRequest&) = delete;
  RunningRequest& operator=(const RunningRequest&) = delete;

  // How long a front end waits in Next before it looks at its caller
  // anyway: a backstop, since the watch wakes it within its period.
  static constexpr std::chrono::milliseconds kIdleWait{1000};
  // The next output, waiting up to `wait` (or until the watch sees the
  // caller gone: then empty). A stop string ends the sequence here.
  // `chunk.finished` marks the last one.
  OutputChunk Next(std::chrono::milliseconds wait);
  // Ends the request from the front end's side (client gone, deadline):
  // the sequence is cancelled and its blocks freed before this returns
  // (bounded), and the request is counted under `outcome`.
  void Abandon(const std::string& outcome);
  bool finished() const { return done_; }

 private:
  void CancelAndWait();

  Dispatcher* dispatcher_;
  OutputProcessor output_;
  std::shared_ptr<RequestStream> stream_;
  uint64_t handle_ = 0;
  bool done_ = false;
  CallerPass pass_;
  GoneWatch::Handle watched_;  // last: unregistered before the stream goes
};

class RequestIntake {
 public:
  // All must outlive the intake; `tokenizer` may be null (token ids only),
  // `auth` too (every caller passes).
  RequestIntake(Dispatcher* dispatcher, RouterMetrics* metrics, const model::Tokenizer* tokenizer,
                CallerAuth* auth = nullptr)
      : dispatcher_(dispatcher), metrics_(metrics), tokenizer_(tokenizer), auth_(auth) {}

  const model::Tokenizer* tokenizer() const { return tokenizer_; }
  Dispatcher* dispatcher() const { return dispatcher_; }

  // Checks the caller's token (`authorization`: the header's value, empty
  // when absent), then checks, tokenizes, admits and submits a Generate
  // request. UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED come
  // from the token's rules (router/caller_auth.h) before anything else.
  // `cancelled` (may be empty) is asked while the prompt is tokenized: a
  // caller gone or past its deadline ends it with CANCELLED (counted under
  // "cancelled"); then, while the request runs, by the intake's GoneWatch,
  // which wakes the front end's RunningRequest::Next (so it must stay valid
  // as long as the RunningRequest, and be thread-safe).
  absl::StatusOr<std::unique_ptr<RunningRequest>> StartGenerate(const v1::GenerateRequest& request,
                                                               std::string_view authorization = {},
                                                               const model::Tokenizer::Cancelled& cancelled = {});
  // `gone` (may be empty) is the same question for a Score request.
  absl::StatusOr<std::unique_ptr<RunningRequest>> StartScore(const v1::ScoreRequest& request,
                                                            std::string_view authorization = {},
                                                            const model::Tokenizer::Cancelled& gone = {});
  // The token alone, for calls that run no model (models, tokenize, health).
  absl::Status Authenticate(std::string_view authorization);

  // The served model's limits; INVALID_ARGUMENT when `requested_model`
  // (empty: any) is not the served one, UNAVAILABLE before any worker
  // registered.
  absl::StatusOr<Limits> CurrentLimits(const std::string& requested_model) const;
  // A replica is up and the queue has room (counted when not).
  absl::Status Admit();

 private:
  absl::Status Invalid(absl::Status status);
  absl::StatusOr<CallerPass> Authorize(std::string_view authorization, const std::string& requested_model,
                                       int32_t priority);
  absl::Status Denied(absl::Status status);

  Dispatcher* dispatcher_;
  RouterMetrics* metrics_;
  const model::Tokenizer* tokenizer_;
  CallerAuth* auth_;
  GoneWatch watch_;  // for every request this intake started
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_REQUEST_INTAKE_H_
