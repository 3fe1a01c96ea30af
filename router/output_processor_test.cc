// The per-request output processor: tokens and text deltas, nothing after
// a stop string (and the sequence is cancelled), finish reasons and their
// RPC statuses, Score's logprobs, and the latency metrics recorded once per
// request at the phase where each event happened.
#include "router/output_processor.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "router/byte_tokenizer.h"

namespace strata::router {
namespace {

using Clock = RequestStream::Clock;

using testing_util::ByteTokenizer;

void Feed(RequestStream& stream, const std::string& text) {
  for (char c : text) stream.Token(TokenOut{static_cast<uint8_t>(c), -0.5f, {{static_cast<uint8_t>(c), -0.5f}}});
}

double CountOf(const std::string& rendered, const std::string& series) {
  const size_t at = rendered.find(series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(rendered.substr(at + series.size() + 1));
}

TEST(OutputProcessorTest, TokensTextAndFinish) {
  auto tok = ByteTokenizer();
  RouterMetrics metrics("m");
  RequestStream stream;
  OutputProcessor out(tok.get(), {}, 3, &metrics);
  Feed(stream, "hi ");
  OutputChunk a = out.Process(stream.Next(std::chrono::milliseconds(10)), stream);
  EXPECT_EQ(a.tokens.size(), 3u);
  EXPECT_EQ(a.text, "hi ");
  EXPECT_FALSE(a.finished);
  EXPECT_EQ(a.tokens[0].top.size(), 1u);
  Feed(stream, "you");
  stream.Finished(Finish::kLength, 3, 6, "", {});
  OutputChunk b = out.Process(stream.Next(std::chrono::milliseconds(10)), stream);
  EXPECT_EQ(b.text, "you");
  EXPECT_TRUE(b.finished);
  EXPECT_EQ(b.reason, Finish::kLength);
  EXPECT_EQ(b.prompt_tokens, 3);
  EXPECT_EQ(b.completion_tokens, 6);
  EXPECT_FALSE(b.cancel_sequence);
  EXPECT_TRUE(OutputProcessor::FinishStatus(b.reason, b.error).ok());
  const std::string r = metrics.Render();
  EXPECT_EQ(CountOf(r, "strata_requests_total{model=\"m\",outcome=\"length\"}"), 1);
  EXPECT_EQ(CountOf(r, "strata_time_to_first_token_seconds_count{model=\"m\"}"), 1);
  EXPECT_EQ(CountOf(r, "strata_inter_token_latency_seconds_count{model=\"m\"}"), 5);
  EXPECT_EQ(CountOf(r, "strata_request_latency_seconds_count{model=\"m\"}"), 1);
  EXPECT_EQ(CountOf(r, "strata_prompt_tokens_total{model=\"m\"}"), 3);
  // Nothing more is counted for a finished request.
  out.Abandon("cancelled");
  EXPECT_EQ(CountOf(metrics.Render(), "strata_requests_total{model=\"m\",outcome=\"cancelled\"}"), 0);
}

TEST(OutputProcessorTest, StopStringEndsTheReplyAndCancelsTheSequence) {
  auto tok = ByteTokenizer();
  RequestStream stream;
  OutputProcessor out(tok.get(), {"END"}, 1, nullptr);
  Feed(stream, "abcEN");
  OutputChunk a = out.Process(stream.Next(std::chrono::milliseconds(10)), stream);
  EXPECT_EQ(a.text, "abc");  // "EN" could begin the stop string: held
  Feed(stream, "Dxyz");
  OutputChunk b = out.Process(stream.Next(std::chrono::milliseconds(10)), stream);
  EXPECT_TRUE(b.finished);
  EXPECT_TRUE(b.cancel_sequence);
  EXPECT_EQ(b.reason, Finish::kStop);
  EXPECT_EQ(b.text, "");
  EXPECT_EQ(b.tokens.size(), 1u);  // "D" completed the stop string; nothing after it
  EXPECT_EQ(b.completion_tokens, 6);
  // The cancelled sequence's own finish is not sent again.
  stream.Finished(Finish::kCancelled, 1, 9, "", {});
  EXPECT_TRUE(out.Process(stream.Next(std::chrono::milliseconds(10)), stream).empty());
}

TEST(OutputProcessorTest, FailuresMapToRpcStatuses) {
  RequestStream stream;
  OutputProcessor out(nullptr, {}, 2, nullptr);
  stream.Token(TokenOut{5, -1.0f, {}});
  stream.Finished(Finish::kUnavailable, 2, 1, "pipeline p0 is down: stage 1 rank 0 restarted", {});
  OutputChunk c = out.Process(stream.Next(std::chrono::milliseconds(10)), stream);
  EXPECT_TRUE(c.finished);
  EXPECT_EQ(c.tokens.size(), 1u) << "the tokens already generated are still sent";
  EXPECT_TRUE(c.text.empty());
  absl::Status s = OutputProcessor::FinishStatus(c.reason, c.error);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("restarted"), std::string::npos);
  EXPECT_EQ(OutputProcessor::FinishStatus(Finish::kError, "bad").code(), absl::StatusCode::kInternal);
  EXPECT_STREQ(OutputProcessor::OutcomeName(Finish::kUnavailable), "unavailable");
}

TEST(OutputProcessorTest, ScoreAndQueueTime) {
  RouterMetrics metrics("m");
  RequestStream stream;
  OutputProcessor out(nullptr, {}, 4, &metrics);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stream.MarkScheduled(Clock::now());
  stream.MarkScheduled(Clock::now() + std::chrono::hours(1));  // only the first counts
  stream.Finished(Finish::kStop, 4, 0, "", {-1.0f, -2.0f});
  OutputChunk c = out.Process(stream.Next(std::chrono::milliseconds(10)), stream);
  EXPECT_EQ(c.score, (std::vector<float>{-1.0f, -2.0f}));
  EXPECT_GE(stream.first_scheduled() - stream.arrival, std::chrono::milliseconds(5));
  EXPECT_LT(stream.first_scheduled() - stream.arrival, std::chrono::minutes(1));
  const std::string r = metrics.Render();
  EXPECT_EQ(CountOf(r, "strata_queue_time_seconds_count{model=\"m\"}"), 1);
  EXPECT_EQ(CountOf(r, "strata_time_to_first_token_seconds_count{model=\"m\"}"), 0);
}

TEST(OutputProcessorTest, AbandonCountsOnce) {
  RouterMetrics metrics("m");
  OutputProcessor out(nullptr, {}, 1, &metrics);
  out.Abandon("deadline");
  out.Abandon("cancelled");
  const std::string r = metrics.Render();
  EXPECT_EQ(CountOf(r, "strata_requests_total{model=\"m\",outcome=\"deadline\"}"), 1);
  EXPECT_EQ(CountOf(r, "strata_requests_total{model=\"m\",outcome=\"cancelled\"}"), 0);
}

}  // namespace
}  // namespace strata::router
