#include "router/router_service.h"

#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "model/file_system.h"
#include "model/tokenizer.h"
#include "router/text_stream.h"
#include "router/validation.h"
#include "strata/v1/inference.grpc.pb.h"
#include "strata/v1/worker.grpc.pb.h"

namespace strata::router {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

std::string NewRequestId() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device()();
  return absl::StrCat("req-", absl::Hex(salt & 0xffffff), "-", ++counter);
}

const char* OutcomeName(Finish f) {
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

}  // namespace

struct RouterServer::Services : public v1::Inference::Service, public v1::Fleet::Service {
  Engine* engine = nullptr;
  RouterMetrics* metrics = nullptr;
  RouterOptions options;
  std::unique_ptr<model::Tokenizer> tokenizer;

  static std::vector<model::ChatMessage> Messages(const google::protobuf::RepeatedPtrField<v1::ChatMessage>& in) {
    std::vector<model::ChatMessage> out;
    for (const auto& m : in) out.push_back({m.role(), m.content()});
    return out;
  }

  // The prompt as token ids, from exactly one of prompt_ids, prompt and
  // messages. `chat` is set for messages.
  absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::GenerateRequest& r, bool* chat) {
    *chat = false;
    const int sources = (r.prompt_ids_size() > 0) + !r.prompt().empty() + (r.messages_size() > 0);
    if (sources > 1) {
      return absl::InvalidArgumentError("prompt_ids: give exactly one of prompt_ids, prompt and messages");
    }
    if (r.prompt_ids_size() > 0 || sources == 0) return std::vector<int32_t>(r.prompt_ids().begin(), r.prompt_ids().end());
    if (!tokenizer) {
      return absl::InvalidArgumentError(absl::StrCat(r.prompt().empty() ? "messages" : "prompt",
                                                     ": text needs a tokenizer (start the router with --tokenizer DIR)"));
    }
    if (!r.prompt().empty()) {
      auto ids = tokenizer->Encode(r.prompt());
      if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("prompt: ", ids.status().message()));
      ids->insert(ids->begin(), model::kBeginOfText);
      return ids;
    }
    *chat = true;
    auto ids = model::ApplyChatTemplate(*tokenizer, Messages(r.messages()));
    if (!ids.ok()) return absl::InvalidArgumentError(ids.status().message());
    return ids;
  }

  grpc::Status Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* req, v1::TokenizeResponse* resp) override {
    if (!tokenizer) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this router has no tokenizer (--tokenizer DIR)");
    absl::StatusOr<std::vector<int32_t>> ids;
    if (req->messages_size() > 0) {
      if (!req->text().empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "text: give text or messages, not both");
      ids = model::ApplyChatTemplate(*tokenizer, Messages(req->messages()));
    } else {
      ids = req->special_tokens() ? tokenizer->EncodeWithSpecialTokens(req->text()) : tokenizer->Encode(req->text());
      if (!ids.ok()) ids = absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()));
    }
    if (!ids.ok()) return ToGrpc(ids.status());
    for (int32_t id : *ids) resp->add_ids(id);
    return grpc::Status::OK;
  }

  grpc::Status Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* req, v1::DetokenizeResponse* resp) override {
    if (!tokenizer) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this router has no tokenizer (--tokenizer DIR)");
    auto text = model::DecodeToText(*tokenizer, std::vector<int32_t>(req->ids().begin(), req->ids().end()));
    if (!text.ok()) return ToGrpc(text.status());
    resp->set_text(*text);
    return grpc::Status::OK;
  }

  absl::StatusOr<Limits> CurrentLimits(const std::string& requested_model) {
    v1::ModelInfo info;
    int32_t up = 0, total = 0;
    if (!engine->Model(&info, &up, &total)) return absl::UnavailableError("no worker has registered yet");
    if (!requested_model.empty() && requested_model != info.name()) {
      return absl::InvalidArgumentError(absl::StrCat("model: \"", requested_model, "\" is not served (this router serves \"",
                                                     info.name(), "\")"));
    }
    Limits l;
    l.vocab_size = info.shape().vocab_size();
    l.context_length = info.shape().max_position_embeddings();
    l.kv_capacity_tokens = engine->KvCapacityTokens();
    l.max_tokens_limit = options.engine.max_tokens_limit;
    l.max_prompt_tokens = options.engine.max_prompt_tokens;
    l.eos_ids.assign(info.shape().eos_token_ids().begin(), info.shape().eos_token_ids().end());
    l.has_tokenizer = tokenizer != nullptr;
    return l;
  }

  // Admission checks shared by Generate and Score.
  grpc::Status Admit() {
    if (!engine->Serving()) {
      metrics->Requests("unavailable").Increment();
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no pipeline is serving");
    }
    if (engine->queued() >= options.engine.max_queue) {
      metrics->Requests("rejected").Increment();
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("the queue is full (", options.engine.max_queue, " requests waiting)"));
    }
    return grpc::Status::OK;
  }

  // Cancels a request and waits (bounded) until the engine ended it: its
  // blocks are free within a step.
  void CancelAndWait(uint64_t handle, RequestStream* stream) {
    engine->Cancel(handle);
    const auto until = Clock::now() + std::chrono::seconds(10);
    while (!stream->finished() && Clock::now() < until) stream->Next(milliseconds(20));
  }

  // Waits for the next events of `stream`, handling cancellation and the
  // deadline; returns false with `status` set when the request must end.
  bool NextEvents(grpc::ServerContext* ctx, uint64_t handle, RequestStream* stream, RequestStream::Event* e,
                  grpc::Status* status) {
    *e = stream->Next(milliseconds(50));
    if (e->finished) return true;
    const bool cancelled = ctx->IsCancelled();
    const bool expired = ctx->deadline() < std::chrono::system_clock::now();
    if (!cancelled && !expired) return true;
    CancelAndWait(handle, stream);
    metrics->Requests(expired && !cancelled ? "deadline" : "cancelled").Increment();
    *status = expired && !cancelled ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed")
                                    : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    return false;
  }

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    auto limits = CurrentLimits(req->model());
    if (!limits.ok()) return ToGrpc(limits.status());
    bool chat = false;
    auto prompt = PromptIds(*req, &chat);
    if (!prompt.ok()) {
      metrics->Requests("invalid").Increment();
      return ToGrpc(prompt.status());
    }
    v1::GenerateRequest resolved = *req;
    resolved.clear_prompt();
    resolved.clear_messages();
    resolved.mutable_prompt_ids()->Assign(prompt->begin(), prompt->end());
    auto spec = ValidateGenerate(resolved, *limits);
    if (!spec.ok()) {
      metrics->Requests("invalid").Increment();
      return ToGrpc(spec.status());
    }
    if (chat && !req->stop().ignore_eos()) {
      for (int32_t id : model::ChatStopIds()) spec->stop_ids.push_back(id);
    }
    if (grpc::Status s = Admit(); !s.ok()) return s;
    const std::string request_id = req->request_id().empty() ? NewRequestId() : req->request_id();
    std::unique_ptr<TextStream> text;
    if (tokenizer) {
      text = std::make_unique<TextStream>(tokenizer.get(), std::vector<std::string>(req->stop().stop_strings().begin(),
                                                                                    req->stop().stop_strings().end()));
    }
    int32_t sent_tokens = 0;
    bool stopped_by_string = false;
    auto stream = std::make_shared<RequestStream>();
    const int32_t prompt_tokens = static_cast<int32_t>(spec->prompt.size());
    const uint64_t handle = engine->Submit(std::move(*spec), stream);
    auto last_token = Clock::now();
    bool first = true;
    while (true) {
      RequestStream::Event e;
      grpc::Status status;
      if (!NextEvents(ctx, handle, stream.get(), &e, &status)) return status;
      v1::GenerateResponse resp;
      resp.set_request_id(request_id);
      const auto now = Clock::now();
      for (const TokenOut& t : e.tokens) {
        if (stopped_by_string) break;  // nothing after a stop string is sent
        if (text) {
          bool stopped = false;
          *resp.mutable_text() += text->Push(t.id, &stopped);
          if (stopped) stopped_by_string = true;
        }
        ++sent_tokens;
        v1::GeneratedToken* g = resp.add_tokens();
        g->set_token_id(t.id);
        g->set_logprob(t.logprob);
        for (const auto& tl : t.top) {
          v1::TokenLogprob* o = g->add_top();
          o->set_token_id(tl.token);
          o->set_logprob(tl.logprob);
        }
        if (first) {
          metrics->ttft->Observe(std::chrono::duration<double>(now - stream->arrival).count());
          first = false;
        } else {
          metrics->inter_token->Observe(std::chrono::duration<double>(now - last_token).count() /
                                        static_cast<double>(e.tokens.size()));
        }
      }
      if (!e.tokens.empty()) last_token = now;
      if (stopped_by_string) {
        // The reply ends at the stop string: free the sequence now.
        if (!e.finished) CancelAndWait(handle, stream.get());
        e.finished = true;
        e.reason = Finish::kStop;
        e.completion_tokens = sent_tokens;
      } else if (e.finished && text && e.reason != Finish::kError && e.reason != Finish::kUnavailable) {
        *resp.mutable_text() += text->Finish();
      }
      if (e.finished) {
        const auto started = stream->first_step.load();
        if (started != Clock::time_point()) {
          metrics->queue_time->Observe(std::chrono::duration<double>(started - stream->arrival).count());
        }
        metrics->request_latency->Observe(std::chrono::duration<double>(now - stream->arrival).count());
        metrics->Requests(OutcomeName(e.reason)).Increment();
        metrics->prompt_tokens->Increment(prompt_tokens);
        resp.mutable_usage()->set_prompt_tokens(prompt_tokens);
        resp.mutable_usage()->set_completion_tokens(e.completion_tokens);
        switch (e.reason) {
          case Finish::kStop:
            resp.set_finish_reason(v1::GenerateResponse::STOP);
            break;
          case Finish::kLength:
            resp.set_finish_reason(v1::GenerateResponse::LENGTH);
            break;
          case Finish::kCancelled:
            resp.set_finish_reason(v1::GenerateResponse::CANCELLED);
            break;
          case Finish::kError:
          case Finish::kUnavailable:
            resp.set_finish_reason(v1::GenerateResponse::ERROR);
            resp.set_error(e.error);
            break;
        }
        writer->Write(resp);
        if (e.reason == Finish::kUnavailable) return grpc::Status(grpc::StatusCode::UNAVAILABLE, e.error);
        if (e.reason == Finish::kError) return grpc::Status(grpc::StatusCode::INTERNAL, e.error);
        return grpc::Status::OK;
      }
      if ((resp.tokens_size() > 0 || !resp.text().empty()) && !writer->Write(resp)) {
        CancelAndWait(handle, stream.get());  // the client went away
        metrics->Requests("cancelled").Increment();
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
    }
  }

  grpc::Status Score(grpc::ServerContext* ctx, const v1::ScoreRequest* req, v1::ScoreResponse* resp) override {
    auto limits = CurrentLimits(req->model());
    if (!limits.ok()) return ToGrpc(limits.status());
    auto spec = ValidateScore(*req, *limits);
    if (!spec.ok()) {
      metrics->Requests("invalid").Increment();
      return ToGrpc(spec.status());
    }
    if (grpc::Status s = Admit(); !s.ok()) return s;
    auto stream = std::make_shared<RequestStream>();
    const uint64_t handle = engine->Submit(std::move(*spec), stream);
    while (true) {
      RequestStream::Event e;
      grpc::Status status;
      if (!NextEvents(ctx, handle, stream.get(), &e, &status)) return status;
      if (!e.finished) continue;
      metrics->Requests(OutcomeName(e.reason)).Increment();
      if (e.reason == Finish::kUnavailable) return grpc::Status(grpc::StatusCode::UNAVAILABLE, e.error);
      if (e.reason != Finish::kStop) return grpc::Status(grpc::StatusCode::INTERNAL, e.error);
      resp->set_request_id(req->request_id().empty() ? NewRequestId() : req->request_id());
      double total = 0;
      for (float lp : e.score) {
        resp->add_logprobs(lp);
        total += lp;
      }
      resp->set_total_logprob(total);
      return grpc::Status::OK;
    }
  }

  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*, v1::ListModelsResponse* resp) override {
    v1::ModelInfo info;
    int32_t up = 0, total = 0;
    if (!engine->Model(&info, &up, &total)) return grpc::Status::OK;  // nothing registered: no models
    v1::ServedModel* m = resp->add_models();
    *m->mutable_info() = info;
    m->set_context_length(info.shape().max_position_embeddings());
    m->set_pipelines_up(up);
    m->set_pipelines_total(total);
    return grpc::Status::OK;
  }

  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest* req, v1::RegisterResponse* resp) override {
    absl::Status s = engine->Register(*req);
    if (!s.ok()) {
      std::cerr << "strata-router: refused a worker: " << s << std::endl;
      return ToGrpc(s);
    }
    resp->set_result_address(engine->data_address());
    return grpc::Status::OK;
  }
};

absl::StatusOr<std::unique_ptr<RouterServer>> RouterServer::Start(const RouterOptions& options) {
  std::unique_ptr<RouterServer> r(new RouterServer());
  r->options_ = options;
  r->metrics_ = std::make_unique<RouterMetrics>(options.model_name);
  if (options.metrics_port >= 0) {
    if (auto s = r->metrics_->Serve(options.host, options.metrics_port); !s.ok()) return s;
  }
  EngineOptions eo = options.engine;
  eo.host = options.host;
  auto engine = Engine::Create(eo, r->metrics_.get());
  if (!engine.ok()) return engine.status();
  r->engine_ = std::move(*engine);
  r->services_ = std::make_unique<Services>();
  r->services_->engine = r->engine_.get();
  r->services_->metrics = r->metrics_.get();
  r->services_->options = options;
  if (!options.tokenizer_dir.empty()) {
    auto tok = model::Tokenizer::Load(model::PosixFileSystem(), options.tokenizer_dir);
    if (!tok.ok()) return absl::InvalidArgumentError(absl::StrCat("--tokenizer: ", tok.status().message()));
    r->services_->tokenizer = std::move(*tok);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.host, ":", options.port), grpc::InsecureServerCredentials(), &r->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(static_cast<v1::Inference::Service*>(r->services_.get()));
  builder.RegisterService(static_cast<v1::Fleet::Service*>(r->services_.get()));
  r->server_ = builder.BuildAndStart();
  if (r->server_ == nullptr || r->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("the router cannot listen on ", options.host, ":", options.port));
  }
  auto* health = r->server_->GetHealthCheckService();
  health->SetServingStatus(false);
  RouterServer* raw = r.get();
  r->health_thread_ = std::thread([raw, health] {
    bool last = false;
    bool first = true;
    while (!raw->stop_) {
      const bool serving = raw->engine_->Serving();
      if (serving != last || first) {
        health->SetServingStatus(serving);
        health->SetServingStatus("strata.v1.Inference", serving);
        last = serving;
        first = false;
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
  });
  return r;
}

RouterServer::~RouterServer() {
  stop_ = true;
  if (health_thread_.joinable()) health_thread_.join();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  engine_.reset();
}

std::string RouterServer::address() const { return absl::StrCat(options_.host, ":", port_); }
std::string RouterServer::data_address() const { return engine_->data_address(); }
std::string RouterServer::metrics_address() const {
  return metrics_->port() >= 0 ? absl::StrCat(options_.host, ":", metrics_->port()) : "";
}

void RouterServer::Drain(milliseconds budget) {
  server_->GetHealthCheckService()->SetServingStatus(false);
  engine_->Drain(budget);
  stop_ = true;
  if (health_thread_.joinable()) health_thread_.join();
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

void RouterServer::Wait() { server_->Wait(); }

}  // namespace strata::router
