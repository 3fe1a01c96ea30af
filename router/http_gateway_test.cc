// The HTTP API in this process: the gateway over a dispatcher whose one
// replica is a fake pipeline (every sampled token is 7) and a byte-level
// tokenizer. Plain JSON and server-sent events for completions and chat,
// usage, the error bodies and statuses of bad requests (not JSON, too
// large, no replica, unknown path), /health, /ready, /v1/models, and a
// client that disconnects mid-reply (streamed or plain JSON), whose
// request ends and frees its KV blocks.
#include "router/http_gateway.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "router/byte_tokenizer.h"
#include "router/fake_pipeline.h"

namespace strata::router {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using testing_util::FakeControl;
using testing_util::FakeStage;

class HttpGatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DispatcherOptions o;
    o.heartbeat = milliseconds(20);
    metrics_ = std::make_unique<RouterMetrics>("m");
    dispatcher_ = std::make_unique<Dispatcher>(o, metrics_.get(), net_.Listen(), std::make_unique<FakeControl>());
    tokenizer_ = testing_util::ByteTokenizer();
    intake_ = std::make_unique<RequestIntake>(dispatcher_.get(), metrics_.get(), tokenizer_.get());
    HttpGatewayOptions g;
    g.max_body_bytes = 1 << 16;
    auto gateway = HttpGateway::Start(g, intake_.get());
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = std::move(*gateway);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", gateway_->port());
  }
  void TearDown() override {
    client_.reset();
    gateway_.reset();
    dispatcher_.reset();
    stage_.reset();
  }
  void AddReplica() {
    stage_ = testing_util::ServingReplica(dispatcher_.get(), &net_);
    ASSERT_TRUE(dispatcher_->Serving());
  }
  // POST, returning the status and the body (chunked bodies joined).
  std::pair<int, std::string> Post(const std::string& path, const std::string& body) {
    auto res = client_->Post(path.c_str(), body, "application/json");
    if (!res) return {-1, ""};
    return {res->status, res->body};
  }
  // The JSON objects of a server-sent event stream, and whether it ended with [DONE].
  static std::vector<json> Events(const std::string& body, bool* done) {
    std::vector<json> out;
    *done = false;
    size_t at = 0;
    while ((at = body.find("data: ", at)) != std::string::npos) {
      const size_t end = body.find("\n\n", at);
      const std::string data = body.substr(at + 6, end - at - 6);
      if (data == "[DONE]") {
        *done = true;
      } else {
        out.push_back(json::parse(data));
      }
      at = end;
    }
    return out;
  }

  transport::LoopbackNetwork net_;
  std::unique_ptr<RouterMetrics> metrics_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  std::unique_ptr<RequestIntake> intake_;
  std::unique_ptr<HttpGateway> gateway_;
  std::unique_ptr<httplib::Client> client_;
  std::unique_ptr<FakeStage> stage_;
};

TEST_F(HttpGatewayTest, HealthReadyAndNoReplica) {
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto ready = client_->Get("/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  auto [status, body] = Post("/v1/completions", R"({"prompt": "hi"})");
  EXPECT_EQ(status, 503);
  EXPECT_EQ(json::parse(body)["error"]["type"], "service_unavailable");
  AddReplica();
  EXPECT_EQ(client_->Get("/ready")->status, 200);
  json models = json::parse(client_->Get("/v1/models")->body);
  EXPECT_EQ(models["data"][0]["id"], "m");
}

TEST_F(HttpGatewayTest, CompletionAndChatAsPlainJson) {
  AddReplica();
  auto [status, body] = Post("/v1/completions", R"({"prompt": "hi", "max_tokens": 3, "temperature": 0})");
  ASSERT_EQ(status, 200) << body;
  json r = json::parse(body);
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["choices"][0]["text"], std::string(3, '\x07'));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(r["usage"]["completion_tokens"], 3);
  auto chat = Post("/v1/chat/completions",
                   R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "logprobs": true})");
  ASSERT_EQ(chat.first, 200) << chat.second;
  json c = json::parse(chat.second);
  EXPECT_EQ(c["object"], "chat.completion");
  EXPECT_EQ(c["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(c["choices"][0]["message"]["content"], std::string(2, '\x07'));
  EXPECT_EQ(c["choices"][0]["logprobs"]["content"].size(), 2u);
}

TEST_F(HttpGatewayTest, StreamsServerSentEvents) {
  AddReplica();
  auto [status, body] = Post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}],
      "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_EQ(status, 200) << body;
  bool done = false;
  std::vector<json> events = Events(body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (const json& e : events) {
    if (!e["choices"].empty()) text += e["choices"][0]["delta"].value("content", "");
  }
  EXPECT_EQ(text, std::string(4, '\x07'));
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 4);
}

TEST_F(HttpGatewayTest, BadRequestsGetOpenAiErrors) {
  AddReplica();
  auto not_json = Post("/v1/completions", "{oops");
  EXPECT_EQ(not_json.first, 400);
  EXPECT_EQ(json::parse(not_json.second)["error"]["param"], "body");
  auto wrong_type = Post("/v1/completions", R"({"prompt": "a", "max_tokens": "many"})");
  EXPECT_EQ(wrong_type.first, 400);
  EXPECT_EQ(json::parse(wrong_type.second)["error"]["param"], "max_tokens");
  auto too_long = Post("/v1/completions", R"({"prompt": "a", "max_tokens": 100000})");
  EXPECT_EQ(too_long.first, 400);
  EXPECT_EQ(json::parse(too_long.second)["error"]["param"], "max_tokens");
  auto huge = Post("/v1/completions", std::string(1 << 17, ' '));
  EXPECT_EQ(huge.first, 413);
  EXPECT_EQ(json::parse(huge.second)["error"]["param"], "body");
  auto other_model = Post("/v1/completions", R"({"prompt": "a", "model": "gpt-9"})");
  EXPECT_EQ(other_model.first, 400);
  EXPECT_EQ(json::parse(other_model.second)["error"]["param"], "model");
  auto nowhere = client_->Get("/v2/nothing");
  ASSERT_TRUE(nowhere);
  EXPECT_EQ(nowhere->status, 404);
  EXPECT_EQ(json::parse(nowhere->body)["error"]["code"], "not_found");
}

TEST_F(HttpGatewayTest, ADeadlineIs504) {
  AddReplica();
  stage_->delay_ms = 50;
  httplib::Headers headers = {{"X-Request-Timeout-Ms", "200"}};
  auto res = client_->Post("/v1/completions", headers, R"({"prompt": "hi", "max_tokens": 500, "ignore_eos": true})",
                           "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 504);
  EXPECT_EQ(json::parse(res->body)["error"]["type"], "timeout");
  // Streamed: an error event, then the end of the stream.
  res = client_->Post("/v1/completions", headers,
                      R"({"prompt": "hi", "max_tokens": 500, "ignore_eos": true, "stream": true})", "application/json");
  ASSERT_TRUE(res);
  bool done = false;
  std::vector<json> events = Events(res->body, &done);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["error"]["code"], "deadline_exceeded");
  EXPECT_TRUE(done);
  EXPECT_NE(metrics_->Render().find("outcome=\"deadline\"} 2"), std::string::npos);
}

// Streamed or plain JSON, a client that hangs up mid-reply ends its
// request and frees its KV blocks.
class HttpDisconnectTest : public HttpGatewayTest, public ::testing::WithParamInterface<bool> {};

TEST_P(HttpDisconnectTest, AClientThatDisconnectsFreesItsBlocks) {
  const bool stream = GetParam();
  AddReplica();
  stage_->delay_ms = 20;  // a long reply: 2000 tokens at 20 ms each
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(gateway_->port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  const std::string body = std::string(R"({"prompt": "hi", "max_tokens": 2000, "ignore_eos": true, "stream": )") +
                           (stream ? "true}" : "false}");
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  const std::string gauge = "strata_kv_cache_usage_ratio{model=\"m\"} 0\n";
  if (stream) {
    std::string got;
    char buf[4096];
    while (got.find("data: ") == std::string::npos) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      ASSERT_GT(n, 0);
      got.append(buf, static_cast<size_t>(n));
    }
  } else {  // nothing comes until the end: wait until the request holds blocks
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (metrics_->Render().find(gauge) != std::string::npos && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(milliseconds(10));
    }
  }
  EXPECT_EQ(metrics_->Render().find(gauge), std::string::npos) << "the request holds blocks while it runs";
  ::close(fd);  // the client goes away
  // The blocks are freed when the scheduler ends the sequence, and the
  // outcome is counted when its stream closes, a moment later on another
  // thread: wait for both.
  const std::string cancelled = "strata_requests_total{model=\"m\",outcome=\"cancelled\"} 1";
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::string rendered = metrics_->Render();
  while ((rendered.find(gauge) == std::string::npos || rendered.find(cancelled) == std::string::npos) &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(20));
    rendered = metrics_->Render();
  }
  EXPECT_NE(rendered.find(gauge), std::string::npos) << "KV usage did not return to 0";
  std::string outcomes;
  for (size_t at = rendered.find("strata_requests_total{"); at != std::string::npos;
       at = rendered.find("strata_requests_total{", at + 1)) {
    outcomes += rendered.substr(at, rendered.find('\n', at) - at) + "; ";
  }
  EXPECT_NE(rendered.find(cancelled), std::string::npos) << "the request was not counted as cancelled: " << outcomes;
}

INSTANTIATE_TEST_SUITE_P(StreamedAndPlain, HttpDisconnectTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "Streamed" : "PlainJson"; });

}  // namespace
}  // namespace strata::router
