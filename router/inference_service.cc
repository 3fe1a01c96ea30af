#include "router/inference_service.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "base/grpc_status.h"

namespace strata::router {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using base::ToGrpc;

namespace {

std::string NewRequestId() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device()();
  return absl::StrCat("req-", absl::Hex(salt & 0xffffff), "-", ++counter);
}

v1::GenerateResponse::FinishReason FinishReasonOf(Finish reason) {
  switch (reason) {
    case Finish::kStop:
      return v1::GenerateResponse::STOP;
    case Finish::kLength:
      return v1::GenerateResponse::LENGTH;
    case Finish::kCancelled:
      return v1::GenerateResponse::CANCELLED;
    case Finish::kError:
    case Finish::kUnavailable:
      break;
  }
  return v1::GenerateResponse::ERROR;
}

// One chunk of output as a GenerateResponse.
void Translate(const OutputChunk& chunk, const std::string& request_id, v1::GenerateResponse* resp) {
  resp->set_request_id(request_id);
  resp->set_text(chunk.text);
  for (const TokenOut& t : chunk.tokens) {
    v1::GeneratedToken* g = resp->add_tokens();
    g->set_token_id(t.id);
    g->set_logprob(t.logprob);
    for (const auto& tl : t.top) {
      v1::TokenLogprob* o = g->add_top();
      o->set_token_id(tl.token);
      o->set_logprob(tl.logprob);
    }
  }
  if (!chunk.finished) return;
  resp->mutable_usage()->set_prompt_tokens(chunk.prompt_tokens);
  resp->mutable_usage()->set_completion_tokens(chunk.completion_tokens);
  resp->set_finish_reason(FinishReasonOf(chunk.reason));
  if (chunk.reason == Finish::kError || chunk.reason == Finish::kUnavailable) resp->set_error(chunk.error);
}

}  // namespace

InferenceService::InferenceService(Dispatcher* dispatcher, RouterMetrics* metrics,
                                   std::unique_ptr<model::Tokenizer> tokenizer)
    : dispatcher_(dispatcher), metrics_(metrics), tokenizer_(std::move(tokenizer)) {}

absl::StatusOr<Limits> InferenceService::CurrentLimits(const std::string& requested_model) const {
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

grpc::Status InferenceService::Admit() {
  if (!dispatcher_->Serving()) {
    metrics_->Requests("unavailable").Increment();
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no pipeline is serving");
  }
  const int64_t max_queue = dispatcher_->options().max_queue;
  if (dispatcher_->queued() >= max_queue) {
    metrics_->Requests("rejected").Increment();
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("the queue is full (", max_queue, " requests waiting)"));
  }
  return grpc::Status::OK;
}

void InferenceService::CancelAndWait(uint64_t handle, RequestStream* stream) {
  dispatcher_->Cancel(handle);
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (!stream->finished() && Clock::now() < until) stream->Next(milliseconds(20));
}

bool InferenceService::NextChunk(grpc::ServerContext* ctx, uint64_t handle, RequestStream* stream,
                                 OutputProcessor* output, OutputChunk* chunk, grpc::Status* status) {
  RequestStream::Event e = stream->Next(milliseconds(50));
  const bool finished = e.finished;
  *chunk = output->Process(std::move(e), *stream);
  if (finished || chunk->finished) return true;  // a stop string ends it too
  const bool cancelled = ctx->IsCancelled();
  const bool expired = ctx->deadline() < std::chrono::system_clock::now();
  if (!cancelled && !expired) return true;
  CancelAndWait(handle, stream);
  output->Abandon(expired && !cancelled ? "deadline" : "cancelled");
  *status = expired && !cancelled ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed")
                                  : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
  return false;
}

grpc::Status InferenceService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  auto limits = CurrentLimits(req->model());
  if (!limits.ok()) return ToGrpc(limits.status());
  bool chat = false;
  auto prompt = ResolvePrompt(*req, tokenizer_.get(), &chat);
  if (!prompt.ok()) {
    metrics_->Requests("invalid").Increment();
    return ToGrpc(prompt.status());
  }
  v1::GenerateRequest resolved = *req;
  resolved.clear_prompt();
  resolved.clear_messages();
  resolved.mutable_prompt_ids()->Assign(prompt->begin(), prompt->end());
  auto spec = ValidateGenerate(resolved, *limits);
  if (!spec.ok()) {
    metrics_->Requests("invalid").Increment();
    return ToGrpc(spec.status());
  }
  if (chat && !req->stop().ignore_eos()) {
    for (int32_t id : model::ChatStopIds()) spec->stop_ids.push_back(id);
  }
  if (grpc::Status s = Admit(); !s.ok()) return s;
  const std::string request_id = req->request_id().empty() ? NewRequestId() : req->request_id();
  OutputProcessor output(tokenizer_.get(),
                         std::vector<std::string>(req->stop().stop_strings().begin(), req->stop().stop_strings().end()),
                         static_cast<int32_t>(spec->prompt.size()), metrics_);
  auto stream = std::make_shared<RequestStream>();
  const uint64_t handle = dispatcher_->Submit(std::move(*spec), stream);
  while (true) {
    OutputChunk chunk;
    grpc::Status status;
    if (!NextChunk(ctx, handle, stream.get(), &output, &chunk, &status)) return status;
    if (chunk.cancel_sequence) CancelAndWait(handle, stream.get());  // the reply ended at a stop string
    v1::GenerateResponse resp;
    Translate(chunk, request_id, &resp);
    if (chunk.finished) {
      writer->Write(resp);
      return ToGrpc(OutputProcessor::FinishStatus(chunk.reason, chunk.error));
    }
    if ((resp.tokens_size() > 0 || !resp.text().empty()) && !writer->Write(resp)) {
      CancelAndWait(handle, stream.get());  // the client went away
      output.Abandon("cancelled");
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
  }
}

grpc::Status InferenceService::Score(grpc::ServerContext* ctx, const v1::ScoreRequest* req, v1::ScoreResponse* resp) {
  auto limits = CurrentLimits(req->model());
  if (!limits.ok()) return ToGrpc(limits.status());
  auto spec = ValidateScore(*req, *limits);
  if (!spec.ok()) {
    metrics_->Requests("invalid").Increment();
    return ToGrpc(spec.status());
  }
  if (grpc::Status s = Admit(); !s.ok()) return s;
  OutputProcessor output(nullptr, {}, static_cast<int32_t>(spec->prompt.size()), metrics_);
  auto stream = std::make_shared<RequestStream>();
  const uint64_t handle = dispatcher_->Submit(std::move(*spec), stream);
  while (true) {
    OutputChunk chunk;
    grpc::Status status;
    if (!NextChunk(ctx, handle, stream.get(), &output, &chunk, &status)) return status;
    if (!chunk.finished) continue;
    if (chunk.reason == Finish::kUnavailable) return grpc::Status(grpc::StatusCode::UNAVAILABLE, chunk.error);
    if (chunk.reason != Finish::kStop) return grpc::Status(grpc::StatusCode::INTERNAL, chunk.error);
    resp->set_request_id(req->request_id().empty() ? NewRequestId() : req->request_id());
    double total = 0;
    for (float lp : chunk.score) {
      resp->add_logprobs(lp);
      total += lp;
    }
    resp->set_total_logprob(total);
    return grpc::Status::OK;
  }
}

grpc::Status InferenceService::ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                                          v1::ListModelsResponse* resp) {
  v1::ModelInfo info;
  int32_t up = 0, total = 0;
  if (!dispatcher_->fleet().Model(&info, &up, &total)) return grpc::Status::OK;  // nothing registered: no models
  v1::ServedModel* m = resp->add_models();
  *m->mutable_info() = info;
  m->set_context_length(info.shape().max_position_embeddings());
  m->set_pipelines_up(up);
  m->set_pipelines_total(total);
  return grpc::Status::OK;
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* req,
                                        v1::TokenizeResponse* resp) {
  if (!tokenizer_) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this router has no tokenizer (--tokenizer DIR)");
  absl::StatusOr<std::vector<int32_t>> ids;
  if (req->messages_size() > 0) {
    if (!req->text().empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "text: give text or messages, not both");
    ids = model::ApplyChatTemplate(*tokenizer_, ChatMessages(req->messages()));
  } else {
    ids = req->special_tokens() ? tokenizer_->EncodeWithSpecialTokens(req->text()) : tokenizer_->Encode(req->text());
    if (!ids.ok()) ids = absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()));
  }
  if (!ids.ok()) return ToGrpc(ids.status());
  for (int32_t id : *ids) resp->add_ids(id);
  return grpc::Status::OK;
}

grpc::Status InferenceService::Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* req,
                                          v1::DetokenizeResponse* resp) {
  if (!tokenizer_) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this router has no tokenizer (--tokenizer DIR)");
  auto text = model::DecodeToText(*tokenizer_, std::vector<int32_t>(req->ids().begin(), req->ids().end()));
  if (!text.ok()) return ToGrpc(text.status());
  resp->set_text(*text);
  return grpc::Status::OK;
}

}  // namespace strata::router
