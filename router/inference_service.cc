#include "router/inference_service.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "base/grpc_status.h"

namespace strata::router {

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

// The caller's `authorization` metadata, empty when absent.
std::string_view AuthorizationOf(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  return it == md.end() ? std::string_view() : std::string_view(it->second.data(), it->second.size());
}

// Asked while a long text is tokenized: the caller went away or its
// deadline passed.
model::Tokenizer::Cancelled CallerGone(grpc::ServerContext* ctx) {
  return [ctx] { return ctx->IsCancelled() || ctx->deadline() < std::chrono::system_clock::now(); };
}

// A tokenization that CallerGone ended, as the caller's code (a deadline
// that passed cancels the call too: it is checked first).
grpc::Status GoneStatus(grpc::ServerContext* ctx) {
  return ctx->deadline() < std::chrono::system_clock::now()
             ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed while tokenizing")
             : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client while tokenizing");
}

}  // namespace

InferenceService::InferenceService(RequestIntake* intake) : intake_(intake) {}

bool InferenceService::ClientEnded(grpc::ServerContext* ctx, RunningRequest* running, grpc::Status* status) {
  const bool cancelled = ctx->IsCancelled();
  const bool expired = ctx->deadline() < std::chrono::system_clock::now();
  if (!cancelled && !expired) return false;
  // gRPC marks a call whose deadline passed cancelled too: the deadline
  // decides.
  running->Abandon(expired ? "deadline" : "cancelled");
  *status = expired ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed")
                    : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
  return true;
}

grpc::Status InferenceService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  auto running = intake_->StartGenerate(*req, AuthorizationOf(ctx), CallerGone(ctx));
  if (!running.ok() && running.status().code() == absl::StatusCode::kCancelled) return GoneStatus(ctx);
  if (!running.ok()) return ToGrpc(running.status());
  const std::string request_id = req->request_id().empty() ? NewRequestId() : req->request_id();
  while (true) {
    OutputChunk chunk = (*running)->Next(RunningRequest::kIdleWait);
    grpc::Status status;
    if (!chunk.finished && ClientEnded(ctx, running->get(), &status)) return status;
    v1::GenerateResponse resp;
    Translate(chunk, request_id, &resp);
    if (chunk.finished) {
      writer->Write(resp);
      return ToGrpc(OutputProcessor::FinishStatus(chunk.reason, chunk.error));
    }
    if ((resp.tokens_size() > 0 || !resp.text().empty()) && !writer->Write(resp)) {
      (*running)->Abandon("cancelled");  // the client went away
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
  }
}

grpc::Status InferenceService::Score(grpc::ServerContext* ctx, const v1::ScoreRequest* req, v1::ScoreResponse* resp) {
  auto running = intake_->StartScore(*req, AuthorizationOf(ctx), CallerGone(ctx));
  if (!running.ok()) return ToGrpc(running.status());
  while (true) {
    OutputChunk chunk = (*running)->Next(RunningRequest::kIdleWait);
    grpc::Status status;
    if (!chunk.finished && ClientEnded(ctx, running->get(), &status)) return status;
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

grpc::Status InferenceService::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                                          v1::ListModelsResponse* resp) {
  if (absl::Status s = intake_->Authenticate(AuthorizationOf(ctx)); !s.ok()) return ToGrpc(s);
  v1::ModelInfo info;
  int32_t up = 0, total = 0;
  if (!intake_->dispatcher()->fleet().Model(&info, &up, &total)) return grpc::Status::OK;  // nothing registered: no models
  v1::ServedModel* m = resp->add_models();
  *m->mutable_info() = info;
  m->set_context_length(info.shape().max_position_embeddings());
  m->set_pipelines_up(up);
  m->set_pipelines_total(total);
  return grpc::Status::OK;
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                                        v1::TokenizeResponse* resp) {
  if (absl::Status s = intake_->Authenticate(AuthorizationOf(ctx)); !s.ok()) return ToGrpc(s);
  if (!intake_->tokenizer()) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this router has no tokenizer (--tokenizer DIR)");
  absl::StatusOr<std::vector<int32_t>> ids;
  if (req->messages_size() > 0) {
    if (!req->text().empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "text: give text or messages, not both");
    ids = model::ApplyChatTemplate(*intake_->tokenizer(), ChatMessages(req->messages()), true, CallerGone(ctx));
    if (!ids.ok() && ids.status().code() == absl::StatusCode::kCancelled) return GoneStatus(ctx);
  } else {
    ids = req->special_tokens() ? intake_->tokenizer()->EncodeWithSpecialTokens(req->text(), CallerGone(ctx))
                               : intake_->tokenizer()->Encode(req->text(), CallerGone(ctx));
    if (!ids.ok() && ids.status().code() == absl::StatusCode::kCancelled) return GoneStatus(ctx);
    if (!ids.ok()) ids = absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()));
  }
  if (!ids.ok()) return ToGrpc(ids.status());
  for (int32_t id : *ids) resp->add_ids(id);
  return grpc::Status::OK;
}

grpc::Status InferenceService::Detokenize(grpc::ServerContext* ctx, const v1::DetokenizeRequest* req,
                                          v1::DetokenizeResponse* resp) {
  if (absl::Status s = intake_->Authenticate(AuthorizationOf(ctx)); !s.ok()) return ToGrpc(s);
  if (!intake_->tokenizer()) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this router has no tokenizer (--tokenizer DIR)");
  auto text = model::DecodeToText(*intake_->tokenizer(), std::vector<int32_t>(req->ids().begin(), req->ids().end()));
  if (!text.ok()) return ToGrpc(text.status());
  resp->set_text(*text);
  return grpc::Status::OK;
}

}  // namespace strata::router
