#include "router/http_gateway.h"

#include <httplib.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "router/http_peer_watch.h"
#include "router/openai_api.h"

namespace strata::router {
namespace {

using json = nlohmann::json;

// JSON out, with invalid UTF-8 (a token's partial bytes) replaced rather
// than thrown on.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(Dump(body), "application/json");
}

void SendError(httplib::Response& res, const absl::Status& status) {
  openai::ApiError e = openai::ErrorFor(status);
  SendJson(res, e.http_status, e.body);
}

bool WriteEvent(httplib::DataSink& sink, const std::string& data) {
  const std::string event = absl::StrCat("data: ", data, "\n\n");
  return sink.is_writable() && sink.write(event.data(), event.size());
}

// A request's deadline from its headers: `X-Request-Timeout-Ms`, or the
// seconds the openai clients send in `X-Stainless-Timeout`; none without.
std::chrono::steady_clock::time_point DeadlineOf(const httplib::Request& req) {
  double ms = 0;
  if (req.has_header("X-Request-Timeout-Ms")) {
    ms = std::atof(req.get_header_value("X-Request-Timeout-Ms").c_str());
  } else if (req.has_header("X-Stainless-Timeout")) {
    ms = 1000 * std::atof(req.get_header_value("X-Stainless-Timeout").c_str());
  }
  if (!(ms > 0) || ms > 1e9) return std::chrono::steady_clock::time_point::max();
  return std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(ms));
}

const absl::Status kDeadline = absl::DeadlineExceededError("the request's deadline passed");

// A request being answered, kept alive by the content provider until it ends.
struct Stream {
  openai::ApiRequest request;
  std::unique_ptr<RunningRequest> running;
  std::unique_ptr<openai::ReplyWriter> writer;
  std::chrono::steady_clock::time_point deadline;
  PeerWatch client;  // whether the caller is still connected

  bool Expired() {
    if (std::chrono::steady_clock::now() < deadline) return false;
    running->Abandon("deadline");
    return true;
  }
};

// Writes the stream's events until it ends (true) or the client went away
// (false: the request is cancelled and its blocks freed).
bool PumpStream(Stream& s, httplib::DataSink& sink) {
  while (true) {
    if (!sink.is_writable() || s.client.Gone()) {
      s.running->Abandon("cancelled");
      return false;
    }
    if (s.Expired()) {
      WriteEvent(sink, Dump(openai::ErrorFor(kDeadline).body));
      WriteEvent(sink, "[DONE]");
      sink.done();
      return true;
    }
    OutputChunk chunk = s.running->Next(RunningRequest::kIdleWait);
    if (chunk.finished && (chunk.reason == Finish::kError || chunk.reason == Finish::kUnavailable)) {
      OutputChunk partial;  // the tokens that came before the failure, then the error
      partial.tokens = chunk.tokens;
      partial.text = chunk.text;
      for (const json& m : s.writer->StreamChunks(partial)) WriteEvent(sink, Dump(m));
      WriteEvent(sink, Dump(openai::ErrorFor(OutputProcessor::FinishStatus(chunk.reason, chunk.error)).body));
      WriteEvent(sink, "[DONE]");
      sink.done();
      return true;
    }
    for (const json& m : s.writer->StreamChunks(chunk)) {
      if (!WriteEvent(sink, Dump(m))) {
        s.running->Abandon("cancelled");
        return false;
      }
    }
    if (chunk.finished) {
      if (s.request.include_usage) WriteEvent(sink, Dump(s.writer->UsageChunk()));
      WriteEvent(sink, "[DONE]");
      sink.done();
      return true;
    }
  }
}

// An HTTPS server from PEM texts already checked by base::LoadTls.
absl::StatusOr<std::unique_ptr<httplib::Server>> MakeTlsServer(const base::TlsMaterial& tls) {
  X509* cert = base::ParseCertificate(tls.cert_pem);
  EVP_PKEY* key = base::ParsePrivateKey(tls.key_pem);
  // Owned by the server once given; null: callers need no certificate.
  X509_STORE* clients = tls.ca_pem.empty() ? nullptr : base::ParseCertStore(tls.ca_pem);
  std::unique_ptr<httplib::Server> server;
  if (cert != nullptr && key != nullptr) server = std::make_unique<httplib::SSLServer>(cert, key, clients);
  X509_free(cert);
  EVP_PKEY_free(key);
  if (!server || !server->is_valid()) return absl::InvalidArgumentError("the HTTP API cannot use the TLS certificate");
  return server;
}

}  // namespace

HttpGateway::HttpGateway(RequestIntake* intake, std::unique_ptr<httplib::Server> server, bool auth_health)
    : intake_(intake), server_(std::move(server)), auth_health_(auth_health) {}

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Start(const HttpGatewayOptions& o, RequestIntake* intake) {
  std::unique_ptr<httplib::Server> server;
  if (o.tls != nullptr) {
    auto tls = MakeTlsServer(*o.tls);
    if (!tls.ok()) return tls.status();
    server = std::move(*tls);
  } else {
    server = std::make_unique<httplib::Server>();
  }
  std::unique_ptr<HttpGateway> g(new HttpGateway(intake, std::move(server), o.auth_health));
  const int threads = o.threads;
  g->server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  g->server_->set_payload_max_length(o.max_body_bytes);
  // SO_REUSEADDR without httplib's SO_REUSEPORT: a taken port fails to bind.
  g->server_->set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  g->Routes();
  g->port_ = o.port == 0 ? g->server_->bind_to_any_port(o.host) : (g->server_->bind_to_port(o.host, o.port) ? o.port : -1);
  if (g->port_ <= 0) return absl::UnavailableError(absl::StrCat("the HTTP API cannot listen on ", o.host, ":", o.port));
  httplib::Server* listening = g->server_.get();
  g->thread_ = std::thread([listening] { listening->listen_after_bind(); });
  return g;
}

HttpGateway::~HttpGateway() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpGateway::Routes() {
  server_->Post("/v1/completions",
                [this](const httplib::Request& req, httplib::Response& res) { Completion(req, res, false); });
  server_->Post("/v1/chat/completions",
                [this](const httplib::Request& req, httplib::Response& res) { Completion(req, res, true); });
  server_->Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (absl::Status s = intake_->Authenticate(req.get_header_value("Authorization")); !s.ok()) {
      return SendError(res, s);
    }
    Models(res);
  });
  server_->Get("/health", [this](const httplib::Request& req, httplib::Response& res) {
    if (absl::Status s = HealthAuth(req); !s.ok()) return SendError(res, s);
    SendJson(res, 200, {{"status", "ok"}});
  });
  server_->Get("/ready", [this](const httplib::Request& req, httplib::Response& res) {
    if (absl::Status s = HealthAuth(req); !s.ok()) return SendError(res, s);
    const bool ready = intake_->dispatcher()->Serving();
    SendJson(res, ready ? 200 : 503, {{"status", ready ? "ready" : "no pipeline is serving"}});
  });
  // Errors httplib answers itself (unknown path, body over the limit) in
  // OpenAI's shape too.
  server_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const absl::Status s = res.status == 413   ? absl::InvalidArgumentError("body: larger than the limit")
                           : res.status == 404 ? absl::NotFoundError(absl::StrCat("no route for ", req.path))
                                               : absl::UnknownError(absl::StrCat("HTTP ", res.status));
    const int status = res.status;
    SendError(res, s);
    res.status = status;
  });
}

absl::Status HttpGateway::HealthAuth(const httplib::Request& req) {
  return auth_health_ ? intake_->Authenticate(req.get_header_value("Authorization")) : absl::OkStatus();
}

void HttpGateway::Models(httplib::Response& res) {
  v1::ModelInfo info;
  int32_t up = 0, total = 0;
  const bool known = intake_->dispatcher()->fleet().Model(&info, &up, &total);
  SendJson(res, 200, openai::ModelList(known ? info.name() : "", info.shape().max_position_embeddings()));
}

void HttpGateway::Completion(const httplib::Request& req, httplib::Response& res, bool chat) {
  const std::string authorization = req.get_header_value("Authorization");
  if (absl::Status s = intake_->Authenticate(authorization); !s.ok()) return SendError(res, s);
  auto parsed = openai::ParseRequest(chat ? openai::Endpoint::kChatCompletions : openai::Endpoint::kCompletions,
                                     req.body);
  if (!parsed.ok()) return SendError(res, parsed.status());
  const auto deadline = DeadlineOf(req);
  PeerWatch client = PeerWatch::Find(req.local_port, req.remote_addr, req.remote_port);
  // A long prompt stops being tokenized once the deadline passes or the
  // client hangs up; after that the intake's watch asks the same (by value:
  // a streamed reply outlives this function).
  auto running = intake_->StartGenerate(parsed->generate, authorization, [deadline, client] {
    return std::chrono::steady_clock::now() >= deadline || client.Gone();
  });
  if (!running.ok() && running.status().code() == absl::StatusCode::kCancelled) {
    if (std::chrono::steady_clock::now() >= deadline) return SendError(res, kDeadline);
    return;  // nobody to answer
  }
  if (!running.ok()) return SendError(res, running.status());
  v1::ModelInfo info;
  int32_t up = 0, total = 0;
  intake_->dispatcher()->fleet().Model(&info, &up, &total);
  auto stream = std::make_shared<Stream>();
  stream->request = std::move(*parsed);
  stream->running = std::move(*running);
  stream->writer = std::make_unique<openai::ReplyWriter>(stream->request, info.name(), intake_->tokenizer());
  stream->deadline = deadline;
  stream->client = client;
  if (stream->request.stream) {
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream",
                                     [stream](size_t, httplib::DataSink& sink) { return PumpStream(*stream, sink); });
    return;
  }
  while (true) {
    if (stream->Expired()) return SendError(res, kDeadline);
    if (stream->client.Gone()) {  // nobody to answer: end the request, free its blocks
      stream->running->Abandon("cancelled");
      return;
    }
    OutputChunk chunk = stream->running->Next(RunningRequest::kIdleWait);
    stream->writer->Add(chunk);
    if (!chunk.finished) continue;
    absl::Status status = OutputProcessor::FinishStatus(chunk.reason, chunk.error);
    if (!status.ok()) return SendError(res, status);
    return SendJson(res, 200, stream->writer->Complete());
  }
}

}  // namespace strata::router
