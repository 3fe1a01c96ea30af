// The worker's control service on its own: Health reports the state and
// epoch, Stats reads the worker's metrics (the one record of what it did),
// Drain changes the state, Abort fills the abort list and refuses an
// oversized one.
#include "worker/control_service.h"

#include "gtest/gtest.h"

namespace strata::worker {
namespace {

transport::Message PlanMessage(uint64_t step, uint64_t seq) {
  transport::StepPlan plan;
  plan.step_id = step;
  plan.sequences.resize(1);
  plan.sequences[0].seq_id = seq;
  plan.sequences[0].num_tokens = 1;
  plan.token_ids = {1};
  const std::string bytes = transport::EncodePlan(plan);
  transport::Message m;
  m.header.type = static_cast<uint16_t>(transport::MessageType::kStepPlan);
  m.header.step_id = step;
  m.header.plan_bytes = static_cast<uint32_t>(bytes.size());
  m.data.assign(bytes.begin(), bytes.end());
  return m;
}

class ControlServiceTest : public ::testing::Test {
 protected:
  ControlServiceTest() : metrics_(WorkerLabels{"m", "p0", 1, 0}) {
    ControlService::Facts facts;
    facts.identity.set_pipeline("p0");
    facts.identity.set_stage(1);
    facts.epoch = 42;
    facts.kv_blocks = 100;
    facts.weight_bytes = 4096;
    service_ = std::make_unique<ControlService>(facts, &aborts_, &metrics_);
  }
  AbortList aborts_;
  WorkerMetrics metrics_;
  std::unique_ptr<ControlService> service_;
};

TEST_F(ControlServiceTest, HealthFollowsTheState) {
  v1::HealthResponse h;
  ASSERT_TRUE(service_->Health(nullptr, nullptr, &h).ok());
  EXPECT_EQ(h.state(), v1::HealthResponse::LOADING);
  EXPECT_EQ(h.epoch(), 42u);
  service_->set_state(v1::HealthResponse::SERVING);
  metrics_.prefill_steps->Increment(2);
  metrics_.decode_steps->Increment(3);
  ASSERT_TRUE(service_->Health(nullptr, nullptr, &h).ok());
  EXPECT_EQ(h.state(), v1::HealthResponse::SERVING);
  EXPECT_EQ(h.steps_completed(), 5u);
  v1::DrainResponse d;
  ASSERT_TRUE(service_->Drain(nullptr, nullptr, &d).ok());
  EXPECT_EQ(service_->state(), v1::HealthResponse::DRAINING);
}

TEST_F(ControlServiceTest, StatsReadTheMetrics) {
  metrics_.prefill_steps->Increment(2);
  metrics_.failed_steps->Increment();
  metrics_.rows->Increment(17);
  metrics_.prefill_step_seconds->Observe(0.25);
  metrics_.decode_step_seconds->Observe(0.5);
  metrics_.activation_bytes_sent->Increment(1000);
  metrics_.messages_rejected->Increment(3);
  metrics_.steps_aborted->Increment(4);
  metrics_.kv_blocks_used->Set(9);
  v1::StatsResponse st;
  ASSERT_TRUE(service_->Stats(nullptr, nullptr, &st).ok());
  EXPECT_EQ(st.identity().stage(), 1);
  EXPECT_EQ(st.epoch(), 42u);
  EXPECT_EQ(st.prefill_steps(), 2u);
  EXPECT_EQ(st.failed_steps(), 1u);
  EXPECT_EQ(st.rows(), 17u);
  EXPECT_DOUBLE_EQ(st.step_seconds(), 0.75);
  EXPECT_EQ(st.activation_bytes_sent(), 1000u);
  EXPECT_EQ(st.messages_rejected(), 3u);
  EXPECT_EQ(st.steps_aborted(), 4u);
  EXPECT_EQ(st.kv_blocks_total(), 100);
  EXPECT_EQ(st.kv_blocks_used(), 9);
  EXPECT_EQ(st.weight_bytes(), 4096u);
}

TEST_F(ControlServiceTest, AbortFillsTheAbortList) {
  v1::AbortRequest a;
  a.set_up_to_step_id(5);
  a.add_sequence_ids(9);
  v1::AbortResponse r;
  ASSERT_TRUE(service_->Abort(nullptr, &a, &r).ok());
  EXPECT_TRUE(aborts_.Drops(PlanMessage(5, 1)));
  EXPECT_TRUE(aborts_.Drops(PlanMessage(8, 9)));
  EXPECT_FALSE(aborts_.Drops(PlanMessage(6, 1)));
  // A later, lower bound does not move the bound back.
  a.set_up_to_step_id(2);
  a.clear_sequence_ids();
  ASSERT_TRUE(service_->Abort(nullptr, &a, &r).ok());
  EXPECT_TRUE(aborts_.Drops(PlanMessage(4, 1)));
  v1::AbortRequest huge;
  for (int i = 0; i < 100001; ++i) huge.add_sequence_ids(i);
  grpc::Status s = service_->Abort(nullptr, &huge, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("sequence_ids"), std::string::npos);
}

TEST_F(ControlServiceTest, SetDataKeyChecksTheKeyAndHandsItOn) {
  v1::SetDataKeyRequest req;
  req.set_key_id(7);
  req.set_key(std::string(32, 'k'));
  v1::SetDataKeyResponse r;
  // An unsigned data plane takes no key.
  EXPECT_EQ(service_->SetDataKey(nullptr, &req, &r).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  uint64_t got_id = 0;
  std::string got_key;
  service_->set_on_data_key([&](uint64_t id, const std::string& key) {
    got_id = id;
    got_key = key;
  });
  v1::SetDataKeyRequest zero = req, short_key = req;
  zero.set_key_id(0);
  short_key.set_key("too short");
  EXPECT_EQ(service_->SetDataKey(nullptr, &zero, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(service_->SetDataKey(nullptr, &short_key, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(got_id, 0u);
  ASSERT_TRUE(service_->SetDataKey(nullptr, &req, &r).ok());
  EXPECT_EQ(got_id, 7u);
  EXPECT_EQ(got_key, std::string(32, 'k'));
}

}  // namespace
}  // namespace strata::worker
