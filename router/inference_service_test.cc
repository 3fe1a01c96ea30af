// The public API's handlers in this process: a gRPC server with the
// InferenceService over a dispatcher whose one replica is a fake pipeline
// (every sampled token is 7), and a byte-level toy tokenizer. The handlers
// only translate, so these check the translation: streamed tokens, text,
// finish reasons and usage, errors naming the field, UNAVAILABLE without a
// replica, a client deadline, Score, ListModels, Tokenize and Detokenize;
// a long text whose caller's deadline passes stops being tokenized.
#include "router/inference_service.h"

#include <atomic>
#include <functional>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "router/byte_tokenizer.h"
#include "router/dispatcher.h"
#include "router/fake_pipeline.h"

namespace strata::router {
namespace {

using std::chrono::milliseconds;
using testing_util::FakeControl;
using testing_util::FakeStage;

using testing_util::ByteTokenizer;

// The value of one series (name and labels as rendered) in a scrape; -1
// when it is absent.
double SeriesValue(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

// The service, timing its Tokenize and Generate handlers (how long the
// router worked on a call, whatever its caller saw).
class TimedService : public InferenceService {
 public:
  using InferenceService::InferenceService;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req, v1::TokenizeResponse* resp) override {
    return Timed([&] { return InferenceService::Tokenize(ctx, req, resp); });
  }
  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    return Timed([&] { return InferenceService::Generate(ctx, req, writer); });
  }
  std::atomic<int> started{0}, handled{0};
  std::atomic<double> last_seconds{0};
  std::atomic<int> last_code{0};

 private:
  grpc::Status Timed(const std::function<grpc::Status()>& call) {
    const auto start = std::chrono::steady_clock::now();
    started++;
    grpc::Status s = call();
    last_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    last_code = s.error_code();
    handled++;
    return s;
  }
};

class InferenceServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DispatcherOptions o;
    o.heartbeat = milliseconds(20);
    o.step_timeout = milliseconds(2000);  // a dropped step ends its requests soon
    metrics_ = std::make_unique<RouterMetrics>("m");
    dispatcher_ = std::make_unique<Dispatcher>(o, metrics_.get(), net_.Listen(), std::make_unique<FakeControl>());
    tokenizer_ = ByteTokenizer();
    intake_ = std::make_unique<RequestIntake>(dispatcher_.get(), metrics_.get(), tokenizer_.get());
    service_ = std::make_unique<TimedService>(intake_.get());
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    stub_ = v1::Inference::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    dispatcher_.reset();
    stage_.reset();
  }
  void AddReplica() {
    stage_ = testing_util::ServingReplica(dispatcher_.get(), &net_);
    ASSERT_TRUE(dispatcher_->Serving());
  }
  struct Reply {
    grpc::Status status;
    std::vector<v1::GenerateResponse> messages;
  };
  Reply Generate(const v1::GenerateRequest& req, milliseconds deadline = milliseconds(10000)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    auto reader = stub_->Generate(&ctx, req);
    Reply r;
    v1::GenerateResponse m;
    while (reader->Read(&m)) r.messages.push_back(m);
    r.status = reader->Finish();
    return r;
  }

  transport::LoopbackNetwork net_;
  std::unique_ptr<RouterMetrics> metrics_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  std::unique_ptr<RequestIntake> intake_;
  std::unique_ptr<TimedService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  std::unique_ptr<FakeStage> stage_;
};

TEST_F(InferenceServiceTest, NoReplicaIsUnavailable) {
  v1::GenerateRequest req;
  req.add_prompt_ids(1);
  EXPECT_EQ(Generate(req).status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(InferenceServiceTest, GenerateStreamsTokensTextAndUsage) {
  ASSERT_NO_FATAL_FAILURE(AddReplica());
  v1::GenerateRequest req;
  req.set_prompt("hi");
  req.mutable_stop()->set_max_tokens(4);
  req.set_request_id("r1");
  Reply r = Generate(req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_FALSE(r.messages.empty());
  std::string text;
  int tokens = 0;
  for (const auto& m : r.messages) {
    EXPECT_EQ(m.request_id(), "r1");
    text += m.text();
    for (const auto& t : m.tokens()) {
      EXPECT_EQ(t.token_id(), 7);
      ++tokens;
    }
  }
  EXPECT_EQ(tokens, 4);
  EXPECT_EQ(text, std::string(4, '\x07'));
  const v1::GenerateResponse& last = r.messages.back();
  EXPECT_EQ(last.finish_reason(), v1::GenerateResponse::LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 3);  // BOS + 2 bytes
  EXPECT_EQ(last.usage().completion_tokens(), 4);
}

TEST_F(InferenceServiceTest, AStopStringEndsTheReply) {
  ASSERT_NO_FATAL_FAILURE(AddReplica());
  v1::GenerateRequest req;
  req.add_prompt_ids(1);
  req.mutable_stop()->set_max_tokens(50);
  req.mutable_stop()->add_stop_strings(std::string(2, '\x07'));
  Reply r = Generate(req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.messages.back().finish_reason(), v1::GenerateResponse::STOP);
  std::string text;
  for (const auto& m : r.messages) text += m.text();
  EXPECT_EQ(text, "");
}

TEST_F(InferenceServiceTest, BadInputNamesTheField) {
  ASSERT_NO_FATAL_FAILURE(AddReplica());
  v1::GenerateRequest req;
  req.add_prompt_ids(200000);
  req.mutable_stop()->set_max_tokens(2);
  Reply r = Generate(req);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("prompt_ids[0]"), std::string::npos) << r.status.error_message();
  req.clear_prompt_ids();
  req.add_prompt_ids(1);
  req.set_prompt("both");
  r = Generate(req);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.clear_prompt();
  req.set_model("other");
  r = Generate(req);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("model"), std::string::npos);
}

TEST_F(InferenceServiceTest, ADeadlineEndsTheRequest) {
  ASSERT_NO_FATAL_FAILURE(AddReplica());
  stage_->answer = false;
  v1::GenerateRequest req;
  req.add_prompt_ids(1);
  req.mutable_stop()->set_max_tokens(4);
  Reply r = Generate(req, milliseconds(300));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

// The handler too ends with DEADLINE_EXCEEDED, counted as a deadline (it
// waits for the step in flight to give the sequence's blocks back first).
TEST_F(InferenceServiceTest, ADeadlineEndsTheHandlerAsADeadline) {
  ASSERT_NO_FATAL_FAILURE(AddReplica());
  stage_->answer = false;
  v1::GenerateRequest req;
  req.add_prompt_ids(1);
  req.mutable_stop()->set_max_tokens(4);
  EXPECT_EQ(Generate(req, milliseconds(200)).status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (service_->handled.load() == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_EQ(service_->handled.load(), 1);
  EXPECT_EQ(service_->last_code.load(), static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED));
  // ...and counted under "deadline" (gRPC marks the call cancelled as well).
  EXPECT_EQ(SeriesValue(metrics_->Render(), "strata_requests_total{model=\"m\",outcome=\"deadline\"}"), 1);
}

// A front end may wait on its request as long as it likes: once the
// caller's predicate says gone, the intake's watch ends the wait (empty,
// not finished), and the front end abandons the request.
TEST_F(InferenceServiceTest, TheWatchEndsALongWaitWhenTheCallerGoes) {
  ASSERT_NO_FATAL_FAILURE(AddReplica());
  stage_->answer = false;
  v1::GenerateRequest req;
  req.add_prompt_ids(1);
  req.mutable_stop()->set_max_tokens(4);
  std::atomic<bool> gone{false};
  auto running = intake_->StartGenerate(req, "", [&] { return gone.load(); });
  ASSERT_TRUE(running.ok()) << running.status();
  auto waiting = std::async(std::launch::async, [&] { return (*running)->Next(std::chrono::hours(1)); });
  EXPECT_EQ(waiting.wait_for(milliseconds(100)), std::future_status::timeout);  // nothing came, nobody left
  gone = true;
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  OutputChunk chunk = waiting.get();
  EXPECT_FALSE(chunk.finished);
  EXPECT_TRUE(chunk.tokens.empty());
  (*running)->Abandon("cancelled");
  EXPECT_TRUE((*running)->finished());
}

TEST_F(InferenceServiceTest, ScoreListModelsTokenizeDetokenize) {
  ASSERT_NO_FATAL_FAILURE(AddReplica());
  {
    grpc::ClientContext ctx;
    v1::ScoreRequest req;
    req.add_prompt_ids(1);
    req.add_prompt_ids(2);
    req.add_continuation_ids(3);
    v1::ScoreResponse resp;
    grpc::Status s = stub_->Score(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.logprobs_size(), 1);
  }
  {
    grpc::ClientContext ctx;
    v1::ListModelsResponse resp;
    ASSERT_TRUE(stub_->ListModels(&ctx, v1::ListModelsRequest(), &resp).ok());
    ASSERT_EQ(resp.models_size(), 1);
    EXPECT_EQ(resp.models(0).info().name(), "m");
    EXPECT_EQ(resp.models(0).pipelines_up(), 1);
    ASSERT_EQ(resp.models(0).info().stages_size(), 1);
  }
  grpc::ClientContext ctx;
  v1::TokenizeRequest t;
  t.set_text("ab");
  v1::TokenizeResponse ids;
  ASSERT_TRUE(stub_->Tokenize(&ctx, t, &ids).ok());
  EXPECT_EQ(std::vector<int32_t>(ids.ids().begin(), ids.ids().end()), (std::vector<int32_t>{'a', 'b'}));
  grpc::ClientContext ctx2;
  v1::DetokenizeRequest d;
  d.add_ids('o');
  d.add_ids('k');
  v1::DetokenizeResponse text;
  ASSERT_TRUE(stub_->Detokenize(&ctx2, d, &text).ok());
  EXPECT_EQ(text.text(), "ok");
}

// A 3 MB text is tokenized in full without a deadline; with a deadline of
// an eighth of that the handler gives up within a few kilobytes of it (the
// tokenizer asks every 4 KiB), for Tokenize with and without special
// tokens and for a Generate prompt. (Before, the handler went on to the
// end: a 320 KB text with special tokens took 68 s, the caller gone after
// one.) On a loaded machine a call may expire before its handler starts;
// it is tried again with twice the deadline.
TEST_F(InferenceServiceTest, TokenizingEndsWhenTheCallersDeadlinePasses) {
  ASSERT_NO_FATAL_FAILURE(AddReplica());
  std::string text;
  while (text.size() < (3 << 20)) text += "word, <|eot_id|> and more ";
  auto finished = [&](int before) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (service_->handled.load() == before && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(milliseconds(1));
    }
    return service_->handled.load() > before;
  };
  // Runs `call` with deadlines from `deadline` up until its handler ran;
  // the handler's seconds.
  auto with_deadline = [&](milliseconds deadline, const std::function<grpc::StatusCode(milliseconds)>& call) {
    for (int attempt = 0; attempt < 6; ++attempt, deadline *= 2) {
      const int started = service_->started, handled = service_->handled;
      const grpc::StatusCode code = call(deadline);
      EXPECT_TRUE(code == grpc::StatusCode::DEADLINE_EXCEEDED) << code;
      if (service_->started == started) continue;  // expired before the handler began
      EXPECT_TRUE(finished(handled));
      // The caller's stack may cancel the call before the router's deadline passes.
      EXPECT_TRUE(service_->last_code.load() == grpc::StatusCode::DEADLINE_EXCEEDED ||
                  service_->last_code.load() == grpc::StatusCode::CANCELLED)
          << service_->last_code.load();
      return service_->last_seconds.load();
    }
    ADD_FAILURE() << "no handler ran";
    return 1e9;
  };
  for (bool special : {false, true}) {
    v1::TokenizeRequest t;
    t.set_text(text);
    t.set_special_tokens(special);
    double full = 1e9;
    for (int i = 0; i < 2; ++i) {  // the faster of two, the first warms up
      grpc::ClientContext ctx;
      v1::TokenizeResponse ids;
      const int before = service_->handled;
      grpc::Status s = stub_->Tokenize(&ctx, t, &ids);
      ASSERT_TRUE(s.ok()) << s.error_message();
      ASSERT_TRUE(finished(before));
      full = std::min(full, service_->last_seconds.load());
    }
    const double cut = with_deadline(milliseconds(static_cast<int>(full * 125) + 1), [&](milliseconds deadline) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + deadline);
      v1::TokenizeResponse ids;
      return stub_->Tokenize(&ctx, t, &ids).error_code();
    });
    std::cerr << "special " << special << ": whole text " << full << " s, with a deadline " << cut << " s\n";
    EXPECT_LT(cut, full / 2) << "special " << special << ": the whole text takes " << full << " s";
  }
  v1::GenerateRequest req;
  req.set_prompt(text);
  req.mutable_stop()->set_max_tokens(1);
  const int before = service_->handled;
  EXPECT_EQ(Generate(req).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "over max_prompt_tokens";
  ASSERT_TRUE(finished(before));
  const double full = service_->last_seconds.load();
  const double cut = with_deadline(milliseconds(static_cast<int>(full * 125) + 1), [&](milliseconds deadline) {
    return Generate(req, deadline).status.error_code();
  });
  std::cerr << "prompt: whole text " << full << " s, with a deadline " << cut << " s\n";
  EXPECT_LT(cut, full / 2) << "the whole prompt takes " << full << " s";
  EXPECT_GE(SeriesValue(metrics_->Render(), "strata_requests_total{model=\"m\",outcome=\"cancelled\"}"), 1);
}

}  // namespace
}  // namespace strata::router
