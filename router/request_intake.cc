#include "router/request_intake.h"

#include "absl/strings/str_cat.h"

namespace strata::router {

using std::chrono::milliseconds;

RunningRequest::RunningRequest(Dispatcher* dispatcher, OutputProcessor output, SequenceSpec spec, CallerPass pass,
                               GoneWatch* watch, std::function<bool()> gone)
    : dispatcher_(dispatcher), output_(std::move(output)), stream_(std::make_shared<RequestStream>()),
      pass_(std::move(pass)) {
  handle_ = dispatcher_->Submit(std::move(spec), stream_);
  if (watch != nullptr && gone) {
    watched_ = watch->Watch(std::move(gone), [stream = stream_] { stream->Interrupt(); });
  }
}

RunningRequest::~RunningRequest() {
  if (!stream_->finished()) CancelAndWait();
}

void RunningRequest::CancelAndWait() {
  dispatcher_->Cancel(handle_);
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (!stream_->finished() && Clock::now() < until) stream_->Next(milliseconds(20));
}

OutputChunk RunningRequest::Next(milliseconds wait) {
  if (done_) return OutputChunk();
  OutputChunk chunk = output_.Process(stream_->Next(wait), *stream_);
  if (chunk.cancel_sequence) CancelAndWait();  // the reply ended at a stop string
  done_ = chunk.finished;
  return chunk;
}

void RunningRequest::Abandon(const std::string& outcome) {
  if (done_) return;
  CancelAndWait();
  output_.Abandon(outcome);
  done_ = true;
}

absl::StatusOr<Limits> RequestIntake::CurrentLimits(const std::string& requested_model) const {
  v1::ModelInfo info;
  int32_t up = 0, total = 0;
  if (!dispatcher_->fleet().Model(&info, &up, &total)) return absl::UnavailableError("no worker has registered yet");
  if (!requested_model.empty() && requested_model != info.name()) {
    return absl::InvalidArgumentError(absl::StrCat("model: \"", requested_model, "\" is not served (this router serves \"",
                                                   info.name(), "\")"));
  }
  const DispatcherOptions& o = dispatcher_->options();
  Limits l;
  l.vocab_size = info.shape().vocab_size();
  l.context_length = info.shape().max_position_embeddings();
  l.kv_capacity_tokens = dispatcher_->KvCapacityTokens();
  l.max_tokens_limit = o.max_tokens_limit;
  l.max_prompt_tokens = o.max_prompt_tokens;
  l.eos_ids.assign(info.shape().eos_token_ids().begin(), info.shape().eos_token_ids().end());
  l.has_tokenizer = tokenizer_ != nullptr;
  return l;
}

absl::Status RequestIntake::Admit() {
  if (!dispatcher_->Serving()) {
    metrics_->Requests("unavailable").Increment();
    return absl::UnavailableError("no pipeline is serving");
  }
  const int64_t max_queue = dispatcher_->options().max_queue;
  if (dispatcher_->queued() >= max_queue) {
    metrics_->Requests("rejected").Increment();
    return absl::ResourceExhaustedError(absl::StrCat("the queue is full (", max_queue, " requests waiting)"));
  }
  return absl::OkStatus();
}

absl::Status RequestIntake::Invalid(absl::Status status) {
  metrics_->Requests("invalid").Increment();
  return status;
}

absl::Status RequestIntake::Denied(absl::Status status) {
  metrics_->Requests(status.code() == absl::StatusCode::kUnauthenticated      ? "unauthenticated"
                     : status.code() == absl::StatusCode::kPermissionDenied ? "permission_denied"
                                                                            : "over_token_limit")
      .Increment();
  return status;
}

absl::Status RequestIntake::Authenticate(std::string_view authorization) {
  if (auth_ == nullptr) return absl::OkStatus();
  absl::Status s = auth_->Authenticate(authorization);
  return s.ok() ? s : Denied(s);
}

absl::StatusOr<CallerPass> RequestIntake::Authorize(std::string_view authorization, const std::string& requested_model,
                                                    int32_t priority) {
  if (auth_ == nullptr || !auth_->enabled()) return CallerPass();
  std::string model = requested_model;
  if (model.empty()) {
    v1::ModelInfo info;
    int32_t up = 0, total = 0;
    if (dispatcher_->fleet().Model(&info, &up, &total)) model = info.name();
  }
  auto pass = auth_->Admit(authorization, model, priority);
  if (!pass.ok()) return Denied(pass.status());
  return pass;
}

absl::StatusOr<std::unique_ptr<RunningRequest>> RequestIntake::StartGenerate(const v1::GenerateRequest& req,
                                                                             std::string_view authorization,
                                                                             const model::Tokenizer::Cancelled& cancelled) {
  auto pass = Authorize(authorization, req.model(), req.priority());
  if (!pass.ok()) return pass.status();
  auto limits = CurrentLimits(req.model());
  if (!limits.ok()) return limits.status();
  bool chat = false;
  auto prompt = ResolvePrompt(req, tokenizer_, &chat, cancelled);
  if (!prompt.ok() && prompt.status().code() == absl::StatusCode::kCancelled) {
    metrics_->Requests("cancelled").Increment();
    return prompt.status();
  }
  if (!prompt.ok()) return Invalid(prompt.status());
  v1::GenerateRequest resolved = req;
  resolved.clear_prompt();
  resolved.clear_messages();
  resolved.mutable_prompt_ids()->Assign(prompt->begin(), prompt->end());
  auto spec = ValidateGenerate(resolved, *limits);
  if (!spec.ok()) return Invalid(spec.status());
  if (chat && !req.stop().ignore_eos()) {
    for (int32_t id : model::ChatStopIds()) spec->stop_ids.push_back(id);
  }
  if (absl::Status s = Admit(); !s.ok()) return s;
  OutputProcessor output(tokenizer_,
                         std::vector<std::string>(req.stop().stop_strings().begin(), req.stop().stop_strings().end()),
                         static_cast<int32_t>(spec->prompt.size()), metrics_);
  return std::make_unique<RunningRequest>(dispatcher_, std::move(output), std::move(*spec), std::move(*pass), &watch_,
                                          cancelled);
}

absl::StatusOr<std::unique_ptr<RunningRequest>> RequestIntake::StartScore(const v1::ScoreRequest& req,
                                                                          std::string_view authorization,
                                                                          const model::Tokenizer::Cancelled& gone) {
  auto pass = Authorize(authorization, req.model(), 0);
  if (!pass.ok()) return pass.status();
  auto limits = CurrentLimits(req.model());
  if (!limits.ok()) return limits.status();
  auto spec = ValidateScore(req, *limits);
  if (!spec.ok()) return Invalid(spec.status());
  if (absl::Status s = Admit(); !s.ok()) return s;
  OutputProcessor output(nullptr, {}, static_cast<int32_t>(spec->prompt.size()), metrics_);
  return std::make_unique<RunningRequest>(dispatcher_, std::move(output), std::move(*spec), std::move(*pass), &watch_,
                                          gone);
}

}  // namespace strata::router
