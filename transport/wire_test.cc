// The wire format: plans and results round-trip; headers and bodies that are
// truncated, of another version, oversized or inconsistent are refused with
// a message, and no prefix or bit flip of a valid message crashes a decoder.
#include <cmath>
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

TEST(WireTest, PlanFlagsRoundTripEachAlone) {
  for (int flags = 0; flags < 4; ++flags) {
    StepPlan plan = SamplePlan();
    plan.return_logits = (flags & 1) != 0;
    plan.shift_boundaries = (flags & 2) != 0;
    const std::string bytes = EncodePlan(plan);
    auto back = DecodePlan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->return_logits, plan.return_logits) << flags;
    EXPECT_EQ(back->shift_boundaries, plan.shift_boundaries) << flags;
  }
  // A flag this version does not know is refused, by name.
  std::string bytes = EncodePlan(SamplePlan());
  bytes[8] = 4;  // the flags byte follows the step id
  auto bad = DecodePlan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unknown plan flags 4"), std::string::npos) << bad.status();
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
  r.SetStatus(absl::InternalError("stage 1 failed"));
  const std::string err = EncodeResult(r);
  EXPECT_EQ(DecodeResult(reinterpret_cast<const uint8_t*>(err.data()), err.size())->error, "stage 1 failed");
}

TEST(WireTest, ResultCarriesCodeAndStageTimings) {
  StepResult r;
  r.step_id = 9;
  r.SetStatus(absl::UnavailableError("stage 1 rank 0: forwarding activations: peer gone"));
  r.timings = {{0, 0.001f, 0.02f, 0.003f, 0.0004f}, {1, 0.0f, 0.03f, 0.002f, 0.0001f}};
  const std::string bytes = EncodeResult(r);
  auto back = DecodeResult(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_FALSE(back->ok());
  EXPECT_EQ(back->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(back->error, r.error);
  ASSERT_EQ(back->timings.size(), 2u);
  EXPECT_EQ(back->timings[1].stage, 1);
  EXPECT_FLOAT_EQ(back->timings[0].compute_seconds, 0.02f);
  EXPECT_FLOAT_EQ(back->timings[1].send_seconds, 0.0001f);
  r.SetStatus(absl::OkStatus());
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(r.error.empty());
}

TEST(WireTest, ResultRefusesInconsistentStatus) {
  auto decode = [](StepResult r) {
    const std::string bytes = EncodeResult(r);
    return DecodeResult(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()).status();
  };
  StepResult code_without_text;
  code_without_text.code = static_cast<int32_t>(absl::StatusCode::kInternal);
  EXPECT_EQ(decode(code_without_text).code(), absl::StatusCode::kInvalidArgument);
  StepResult text_without_code;
  text_without_code.error = "failed";
  EXPECT_EQ(decode(text_without_code).code(), absl::StatusCode::kInvalidArgument);
  StepResult unknown_code;
  unknown_code.code = 17;
  unknown_code.error = "what";
  EXPECT_NE(decode(unknown_code).message().find("not a gRPC code"), std::string::npos);
  StepResult nan_timing;
  nan_timing.timings = {{0, 0, std::nanf(""), 0, 0}};
  EXPECT_EQ(decode(nan_timing).code(), absl::StatusCode::kInvalidArgument);
  StepResult negative_timing;
  negative_timing.timings = {{0, -1.0f, 0, 0, 0}};
  EXPECT_EQ(decode(negative_timing).code(), absl::StatusCode::kInvalidArgument);
}

TEST(WireTest, PlanCarriesUpstreamTimings) {
  StepPlan p;
  p.step_id = 3;
  PlanSequence s;
  s.seq_id = 1;
  s.num_tokens = 1;
  s.block_table = {0};
  p.sequences = {s};
  p.token_ids = {5};
  p.timings = {{0, 0.5f, 1.0f, 0.25f, 0.125f}};
  const std::string bytes = EncodePlan(p);
  EXPECT_EQ(bytes.size() % 8, 0u);
  auto back = DecodePlan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->timings.size(), 1u);
  EXPECT_FLOAT_EQ(back->timings[0].allreduce_seconds, 0.25f);
  // A stage appends its own timing: the encoding grows by a fixed amount,
  // so a stage can reserve the space before it knows the values.
  StepPlan more = *back;
  more.timings.push_back({1, 0, 0, 0, 0});
  const size_t reserved = EncodePlan(more).size();
  more.timings.back() = {1, 0.1f, 2.0f, 0.3f, 0.01f};
  EXPECT_EQ(EncodePlan(more).size(), reserved);
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
  v.version = kWireVersion + 1;
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
