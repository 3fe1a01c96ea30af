// The wire format: plans and results round-trip; headers and bodies that are
// truncated, of another version, oversized or inconsistent are refused with
// a message, and no prefix or bit flip of a valid message crashes a decoder.
#include "transport/wire.h"

#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "gtest/gtest.h"

namespace strata::transport {
namespace {

StepPlan SamplePlan() {
  StepPlan plan;
  plan.step_id = 42;
  plan.return_logits = true;
  PlanSequence a;
  a.seq_id = 7;
  a.num_tokens = 3;
  a.cached_tokens = 0;
  a.block_table = {4, 9};
  PlanSequence b;
  b.seq_id = 8;
  b.num_tokens = 1;
  b.cached_tokens = 17;
  b.position_offset = 100;
  b.block_table = {1, 2, 3};
  b.sample = true;
  b.sampling.temperature = 0.7f;
  b.sampling.top_k = 40;
  b.sampling.top_p = 0.9f;
  b.sampling.seed = 99;
  b.sampling.step = 5;
  b.logprobs = 3;
  b.prompt_logprobs = true;
  b.next_token_id = 11;
  plan.sequences = {a, b};
  plan.token_ids = {1, 2, 3, 4};
  return plan;
}

TEST(WireTest, PlanRoundTrips) {
  const StepPlan plan = SamplePlan();
  const std::string bytes = EncodePlan(plan);
  auto back = DecodePlan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->step_id, 42u);
  EXPECT_TRUE(back->return_logits);
  ASSERT_EQ(back->sequences.size(), 2u);
  const PlanSequence& b = back->sequences[1];
  EXPECT_EQ(b.seq_id, 8u);
  EXPECT_EQ(b.cached_tokens, 17);
  EXPECT_EQ(b.position_offset, 100);
  EXPECT_EQ(b.block_table, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_TRUE(b.sample);
  EXPECT_TRUE(b.prompt_logprobs);
  EXPECT_FLOAT_EQ(b.sampling.temperature, 0.7f);
  EXPECT_EQ(b.sampling.top_k, 40);
  EXPECT_EQ(b.sampling.seed, 99u);
  EXPECT_EQ(b.sampling.step, 5u);
  EXPECT_EQ(b.logprobs, 3);
  EXPECT_EQ(b.next_token_id, 11);
  EXPECT_EQ(back->token_ids, plan.token_ids);
  EXPECT_EQ(back->NumRows(), 4);
}

TEST(WireTest, ResultRoundTrips) {
  StepResult r;
  r.step_id = 3;
  SequenceResult s;
  s.seq_id = 5;
  s.token = 77;
  s.logprob = -0.25f;
  s.top = {{77, -0.25f}, {3, -2.0f}};
  s.prompt_logprobs = {-1, -2};
  s.logits = {0.5f, 1.5f};
  r.sequences = {s};
  const std::string bytes = EncodeResult(r);
  auto back = DecodeResult(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->sequences[0].token, 77);
  EXPECT_EQ(back->sequences[0].top[1].token, 3);
  EXPECT_EQ(back->sequences[0].logits, s.logits);
  r.error = "stage 1 failed";
  const std::string err = EncodeResult(r);
  EXPECT_EQ(DecodeResult(reinterpret_cast<const uint8_t*>(err.data()), err.size())->error, "stage 1 failed");
}

TEST(WireTest, HeaderValidation) {
  WireHeader h;
  h.type = static_cast<uint16_t>(MessageType::kActivations);
  h.plan_bytes = 100;
  h.payload_bytes = 400;
  EXPECT_TRUE(ValidateHeader(&h, sizeof(h), 500).ok());
  // Truncated header, wrong data length.
  EXPECT_FALSE(ValidateHeader(&h, sizeof(h) - 1, 500).ok());
  EXPECT_FALSE(ValidateHeader(&h, sizeof(h), 499).ok());
  EXPECT_FALSE(ValidateHeader(&h, sizeof(h), 501).ok());
  WireHeader v = h;
  v.version = 2;
  auto s = ValidateHeader(&v, sizeof(v), 500);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("version"), std::string::npos) << s;
  WireHeader m = h;
  m.magic = 0;
  EXPECT_FALSE(ValidateHeader(&m, sizeof(m), 500).ok());
  WireHeader t = h;
  t.type = 9;
  EXPECT_FALSE(ValidateHeader(&t, sizeof(t), 500).ok());
  // Oversized lengths (and a sum that would overflow 32 bits).
  WireHeader big = h;
  big.payload_bytes = kMaxPayloadBytes + 1;
  EXPECT_FALSE(ValidateHeader(&big, sizeof(big), 100 + kMaxPayloadBytes + 1).ok());
  big = h;
  big.plan_bytes = kMaxPlanBytes + 1;
  EXPECT_FALSE(ValidateHeader(&big, sizeof(big), kMaxPlanBytes + 401).ok());
  // Type-specific shapes.
  WireHeader plan = h;
  plan.type = static_cast<uint16_t>(MessageType::kStepPlan);
  EXPECT_FALSE(ValidateHeader(&plan, sizeof(plan), 500).ok());  // a plan with a payload
  WireHeader result = h;
  result.type = static_cast<uint16_t>(MessageType::kStepResult);
  EXPECT_FALSE(ValidateHeader(&result, sizeof(result), 500).ok());  // a result with a plan
}

TEST(WireTest, BadPlansAreRefused) {
  auto decode = [](const StepPlan& p) {
    const std::string b = EncodePlan(p);
    return DecodePlan(reinterpret_cast<const uint8_t*>(b.data()), b.size()).status();
  };
  StepPlan p = SamplePlan();
  p.token_ids.pop_back();
  EXPECT_NE(decode(p).message().find("token ids"), std::string::npos);
  p = SamplePlan();
  p.sequences[0].num_tokens = 0;
  EXPECT_FALSE(decode(p).ok());
  p = SamplePlan();
  p.sequences[1].sampling.temperature = std::nanf("");
  EXPECT_NE(decode(p).message().find("temperature"), std::string::npos);
  p = SamplePlan();
  p.sequences[1].sampling.top_p = 0;
  EXPECT_NE(decode(p).message().find("top_p"), std::string::npos);
  p = SamplePlan();
  p.sequences[1].logprobs = 21;
  EXPECT_FALSE(decode(p).ok());
  p = SamplePlan();
  p.sequences.clear();
  p.token_ids.clear();
  EXPECT_FALSE(decode(p).ok());
}

TEST(WireTest, PrefixesAndBitFlipsNeverCrash) {
  const std::string plan = EncodePlan(SamplePlan());
  StepResult r;
  r.sequences.resize(2);
  r.sequences[0].top = {{1, -1.0f}};
  r.sequences[1].logits = {1, 2, 3};
  const std::string result = EncodeResult(r);
  for (const std::string* bytes : {&plan, &result}) {
    for (size_t n = 0; n < bytes->size(); ++n) {  // every strict prefix is refused
      const auto* d = reinterpret_cast<const uint8_t*>(bytes->data());
      EXPECT_FALSE(bytes == &plan ? DecodePlan(d, n).ok() : DecodeResult(d, n).ok()) << n;
    }
    std::mt19937 rng(1);
    for (int i = 0; i < 2000; ++i) {
      std::string m = *bytes;
      m[rng() % m.size()] ^= static_cast<char>(1 << (rng() % 8));
      const auto* d = reinterpret_cast<const uint8_t*>(m.data());
      if (bytes == &plan) {
        (void)DecodePlan(d, m.size());
      } else {
        (void)DecodeResult(d, m.size());
      }
    }
  }
}

}  // namespace
}  // namespace strata::transport

namespace strata::transport {
namespace {

// The fuzzer's seeds (transport/testdata/wire_corpus, written by hand to the
// documented layout) are valid messages: the format on the page is the
// format in the code.
TEST(WireTest, CorpusSeedsAreValidMessages) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const std::string dir = std::string(srcdir ? srcdir : ".") + "/strata/transport/testdata/wire_corpus/";
  for (const char* name : {"step_plan", "activations", "step_result"}) {
    FILE* f = std::fopen((dir + name).c_str(), "rb");
    ASSERT_NE(f, nullptr) << dir + name;
    std::string bytes;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) bytes.append(buf, n);
    std::fclose(f);
    const auto* d = reinterpret_cast<const uint8_t*>(bytes.data()) + 1;
    const size_t data_size = bytes.size() - 1 - sizeof(WireHeader);
    ASSERT_TRUE(ValidateHeader(d, sizeof(WireHeader), data_size).ok()) << name;
    WireHeader h;
    std::memcpy(&h, d, sizeof(h));
    const uint8_t* body = d + sizeof(WireHeader);
    if (h.plan_bytes > 0) {
      auto plan = DecodePlan(body, h.plan_bytes);
      ASSERT_TRUE(plan.ok()) << name << ": " << plan.status();
      EXPECT_EQ(plan->token_ids, (std::vector<int32_t>{7, 8}));
    } else {
      auto r = DecodeResult(body, h.payload_bytes);
      ASSERT_TRUE(r.ok()) << name << ": " << r.status();
      EXPECT_EQ(r->sequences[0].top.size(), 1u);
    }
  }
}

}  // namespace
}  // namespace strata::transport
