// The OpenAI API as data: request bodies into GenerateRequests (and a
// table of bad bodies, each refused naming the field), failures as
// OpenAI's error bodies with their HTTP statuses, and reply objects.
#include "router/openai_api.h"

#include "gtest/gtest.h"

namespace strata::router::openai {
namespace {

using json = nlohmann::json;

TEST(OpenAiApiTest, CompletionFields) {
  auto r = ParseRequest(Endpoint::kCompletions, R"({"model": "m", "prompt": "Hello", "max_tokens": 7,
      "temperature": 0, "top_p": 0.5, "top_k": 3, "seed": 11, "stop": ["\n", "END"], "logprobs": 2,
      "stream": true, "stream_options": {"include_usage": true}, "user": "u", "ignore_eos": true,
      "some_future_field": {"x": 1}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(r->generate.prompt(), "Hello");
  EXPECT_EQ(r->generate.stop().max_tokens(), 7);
  EXPECT_EQ(r->generate.sampling().temperature(), 0.0f);
  EXPECT_EQ(r->generate.sampling().top_p(), 0.5f);
  EXPECT_EQ(r->generate.sampling().top_k(), 3);
  EXPECT_EQ(r->generate.sampling().seed(), 11u);
  EXPECT_EQ(r->generate.stop().stop_strings_size(), 2);
  EXPECT_TRUE(r->generate.stop().ignore_eos());
  EXPECT_TRUE(r->stream && r->include_usage && r->logprobs);
  EXPECT_EQ(r->generate.logprobs(), 2);
  auto ids = ParseRequest(Endpoint::kCompletions, R"({"prompt": [1, 2, 3]})");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->generate.prompt_ids_size(), 3);
  EXPECT_EQ(ids->generate.stop().max_tokens(), 16);       // OpenAI's default
  EXPECT_EQ(ids->generate.sampling().temperature(), 1.0f);  // OpenAI's default
  EXPECT_EQ(ids->generate.logprobs(), -1);
}

TEST(OpenAiApiTest, ChatFields) {
  auto r = ParseRequest(Endpoint::kChatCompletions, R"({"messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
      "max_completion_tokens": 5, "logprobs": true, "top_logprobs": 3, "top_k": -1})");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->generate.messages_size(), 2);
  EXPECT_EQ(r->generate.messages(1).content(), "Hi there");
  EXPECT_EQ(r->generate.stop().max_tokens(), 5);
  EXPECT_EQ(r->generate.logprobs(), 3);
  EXPECT_TRUE(r->generate.return_logprobs());
  EXPECT_EQ(r->generate.sampling().top_k(), 0);  // vLLM's -1: off
}

TEST(OpenAiApiTest, BadBodiesNameTheField) {
  struct Case {
    Endpoint endpoint;
    std::string body;
    std::string field;
  };
  const Endpoint C = Endpoint::kCompletions, X = Endpoint::kChatCompletions;
  const std::vector<Case> cases = {
      {C, "not json", "body"},
      {C, "[1, 2]", "body"},
      {C, "{\"prompt\": \"a\xff\"}", "body"},  // invalid UTF-8
      {C, "{}", "prompt"},
      {C, R"({"prompt": 5})", "prompt"},
      {C, R"({"prompt": ""})", "prompt"},
      {C, R"({"prompt": ["a", "b"]})", "prompt"},
      {C, R"({"prompt": [1, -2]})", "prompt[1]"},
      {C, R"({"prompt": "a", "max_tokens": "5"})", "max_tokens"},
      {C, R"({"prompt": "a", "max_tokens": 0})", "max_tokens"},
      {C, R"({"prompt": "a", "temperature": 3})", "temperature"},
      {C, R"({"prompt": "a", "temperature": "hot"})", "temperature"},
      {C, R"({"prompt": "a", "top_p": 0})", "top_p"},
      {C, R"({"prompt": "a", "top_k": 1.5})", "top_k"},
      {C, R"({"prompt": "a", "seed": "x"})", "seed"},
      {C, R"({"prompt": "a", "n": 2})", "n"},
      {C, R"({"prompt": "a", "stop": 3})", "stop"},
      {C, R"({"prompt": "a", "stop": ["x", 1]})", "stop[1]"},
      {C, R"({"prompt": "a", "logprobs": 21})", "logprobs"},
      {C, R"({"prompt": "a", "stream": "yes"})", "stream"},
      {C, R"({"prompt": "a", "stream_options": 1})", "stream_options"},
      {C, R"({"prompt": "a", "model": 7})", "model"},
      {C, R"({"prompt": "a", "user": 7})", "user"},
      {C, R"({"prompt": "a", "echo": true})", "echo"},
      {C, R"({"prompt": "a", "presence_penalty": 1})", "presence_penalty"},
      {X, R"({"prompt": "a"})", "messages"},
      {X, R"({"messages": []})", "messages"},
      {X, R"({"messages": ["hi"]})", "messages[0]"},
      {X, R"({"messages": [{"content": "hi"}]})", "messages[0].role"},
      {X, R"({"messages": [{"role": "user", "content": 1}]})", "messages[0].content"},
      {X, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "messages[0].content[0]"},
      {X, R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 1})", "logprobs"},
      {X, R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", "top_logprobs"},
  };
  for (const Case& c : cases) {
    auto r = ParseRequest(c.endpoint, c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(r.status().message()).rfind(c.field + ": ", 0), 0u) << r.status() << " for " << c.body;
    ApiError e = ErrorFor(r.status());
    EXPECT_EQ(e.http_status, 400);
    EXPECT_EQ(e.body["error"]["param"], c.field) << c.body;
    EXPECT_EQ(e.body["error"]["type"], "invalid_request_error");
  }
}

TEST(OpenAiApiTest, ErrorsMapToHttpStatusesAndOpenAiFieldNames) {
  ApiError e = ErrorFor(absl::InvalidArgumentError("stop.max_tokens: 0 is outside [1, 4096]"));
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.body["error"]["param"], "max_tokens");
  EXPECT_EQ(e.body["error"]["message"], "max_tokens: 0 is outside [1, 4096]");
  EXPECT_EQ(ErrorFor(absl::InvalidArgumentError("prompt_ids[2]: token id 9 is outside")).body["error"]["param"],
            "prompt[2]");
  EXPECT_EQ(ErrorFor(absl::ResourceExhaustedError("the queue is full")).http_status, 429);
  EXPECT_EQ(ErrorFor(absl::UnavailableError("no pipeline is serving")).http_status, 503);
  EXPECT_EQ(ErrorFor(absl::DeadlineExceededError("late")).http_status, 504);
  EXPECT_EQ(ErrorFor(absl::UnauthenticatedError("no token")).http_status, 401);
  EXPECT_EQ(ErrorFor(absl::PermissionDeniedError("not yours")).http_status, 403);
  EXPECT_EQ(ErrorFor(absl::InternalError("stage 1: boom")).http_status, 500);
  EXPECT_TRUE(ErrorFor(absl::UnavailableError("x")).body["error"]["param"].is_null());
}

TEST(OpenAiApiTest, RepliesInOpenAiShape) {
  auto chat = ParseRequest(Endpoint::kChatCompletions,
                           R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 1,
                               "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(chat.ok());
  ReplyWriter w(*chat, "served", nullptr);
  OutputChunk a;
  a.tokens = {{7, -0.5f, {{7, -0.5f}}}};
  a.text = "he";
  auto first = w.StreamChunks(a);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(first[0]["model"], "served");
  EXPECT_EQ(first[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first[0]["choices"][0]["delta"]["content"], "he");
  EXPECT_EQ(first[0]["choices"][0]["logprobs"]["content"][0]["token"], "token_id:7");
  OutputChunk b;
  b.text = "y";
  b.finished = true;
  b.reason = Finish::kLength;
  b.prompt_tokens = 4;
  b.completion_tokens = 2;
  auto last = w.StreamChunks(b);
  ASSERT_EQ(last.size(), 2u);
  EXPECT_FALSE(last[0]["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(last[1]["choices"][0]["finish_reason"], "length");
  json usage = w.UsageChunk();
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 6);

  auto completion = ParseRequest(Endpoint::kCompletions, R"({"prompt": "x", "logprobs": 1})");
  ReplyWriter c(*completion, "served", nullptr);
  c.Add(a);
  c.Add(b);
  json whole = c.Complete();
  EXPECT_EQ(whole["object"], "text_completion");
  EXPECT_EQ(whole["choices"][0]["text"], "hey");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole["choices"][0]["logprobs"]["token_logprobs"][0], -0.5);
  EXPECT_EQ(whole["usage"]["prompt_tokens"], 4);
  json models = ModelList("served", 4096);
  EXPECT_EQ(models["data"][0]["id"], "served");
  EXPECT_TRUE(ModelList("", 0)["data"].empty());
}

}  // namespace
}  // namespace strata::router::openai
